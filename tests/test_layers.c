/* test_layers.c: the layer order of the sources, read from their #include lines.
 *
 *   include/  <-  slots/  <-  alloc/  <-  preload/
 *
 * A file may include headers of its own layer and of the layers below it,
 * never of a layer above. Quoted includes resolve as the compiler does with
 * the build's include path: the including file's folder first, then include/,
 * then the source root ("slots/segment.h"). <slotmalloc.h> and <slots/...>
 * style angle includes count too. Also: only slots/ calls mmap and friends.
 *
 * SM_SOURCE_DIR (the source root) comes from tests/CMakeLists.txt.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SM_SOURCE_DIR
#error "SM_SOURCE_DIR must name the source root"
#endif

static const char *const LAYERS[] = {"include", "slots", "alloc", "preload"};
enum { NLAYERS = 4 };

static int layer_rank(const char *folder) {
  for (int i = 0; i < NLAYERS; i++)
    if (strcmp(folder, LAYERS[i]) == 0) return i;
  return -1;
}

static int exists(const char *rel) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", SM_SOURCE_DIR, rel);
  return access(p, R_OK) == 0;
}

static int is_source(const char *name) {
  size_t n = strlen(name);
  return n > 2 && name[n - 2] == '.' && (name[n - 1] == 'c' || name[n - 1] == 'h');
}

/* The whole file as a string (malloc'd). */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot read %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
  s[n] = 0;
  fclose(f);
  return s;
}

/* Which layer a project include resolves to (-1: a system header, -2: a quoted
 * include that names no file of the project). */
static int resolve(const char *from_folder, const char *inc, int quoted, char *resolved, size_t rsz) {
  char rel[PATH_MAX];
  if (quoted) {
    snprintf(rel, sizeof rel, "%s/%s", from_folder, inc);
    if (exists(rel)) goto found;
  }
  snprintf(rel, sizeof rel, "include/%s", inc);
  if (exists(rel)) goto found;
  snprintf(rel, sizeof rel, "%s", inc);
  if (strchr(inc, '/') && exists(rel)) goto found;
  return quoted ? -2 : -1;
found:
  snprintf(resolved, rsz, "%s", rel);
  /* the folder is the first component of the path relative to the root */
  char folder[64];
  size_t k = strcspn(rel, "/");
  if (k >= sizeof folder) return -2;
  memcpy(folder, rel, k);
  folder[k] = 0;
  /* "slots/../alloc/x.h" and the like: judge by the real folder */
  if (strstr(rel, "..")) {
    char real[PATH_MAX], root[PATH_MAX], full[PATH_MAX];
    snprintf(full, sizeof full, "%s/%s", SM_SOURCE_DIR, rel);
    if (!realpath(full, real) || !realpath(SM_SOURCE_DIR, root)) return -2;
    size_t rl = strlen(root);
    if (strncmp(real, root, rl) != 0 || real[rl] != '/') return -2;
    k = strcspn(real + rl + 1, "/");
    memcpy(folder, real + rl + 1, k < sizeof folder ? k : sizeof folder - 1);
    folder[k < sizeof folder ? k : sizeof folder - 1] = 0;
  }
  return layer_rank(folder);
}

typedef struct {
  int files[NLAYERS];
  int includes;
  char violations[8192];
  size_t vlen;
} scan_t;

static void scan_file(scan_t *st, const char *folder, const char *name) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s/%s", SM_SOURCE_DIR, folder, name);
  char *text = slurp(path);
  int me = layer_rank(folder);
  int line = 0;
  for (char *l = text; l && *l;) {
    char *end = strchr(l, '\n');
    if (end) *end = 0;
    line++;
    char *s = l;
    while (*s == ' ' || *s == '\t') s++;
    if (*s == '#') {
      s++;
      while (*s == ' ' || *s == '\t') s++;
      if (strncmp(s, "include", 7) == 0) {
        s += 7;
        while (*s == ' ' || *s == '\t') s++;
        char open = *s, close = open == '"' ? '"' : open == '<' ? '>' : 0;
        char *e = close ? strchr(s + 1, close) : NULL;
        if (e) {
          char inc[PATH_MAX];
          snprintf(inc, sizeof inc, "%.*s", (int)(e - s - 1), s + 1);
          char resolved[PATH_MAX] = "";
          int target = resolve(folder, inc, open == '"', resolved, sizeof resolved);
          if (target >= 0 || target == -2) st->includes++;
          if (target == -2 && st->vlen < sizeof st->violations - 300)
            st->vlen +=
                (size_t)snprintf(st->violations + st->vlen, sizeof st->violations - st->vlen,
                                 "  %s/%s:%d: #include \"%s\" names no project file\n", folder, name, line, inc);
          else if (target > me && st->vlen < sizeof st->violations - 300)
            st->vlen += (size_t)snprintf(st->violations + st->vlen, sizeof st->violations - st->vlen,
                                         "  %s/%s:%d: %s/ includes %s (layer %s/ is above it)\n", folder, name, line,
                                         folder, resolved, LAYERS[target]);
        }
      }
    }
    l = end ? end + 1 : NULL;
  }
  free(text);
  st->files[me]++;
}

static void scan_all(scan_t *st) {
  memset(st, 0, sizeof *st);
  for (int i = 0; i < NLAYERS; i++) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", SM_SOURCE_DIR, LAYERS[i]);
    DIR *d = opendir(dir);
    if (!d) continue;
    struct dirent *e;
    while ((e = readdir(d)))
      if (is_source(e->d_name)) scan_file(st, LAYERS[i], e->d_name);
    closedir(d);
  }
}

/* Every #include of include/, slots/, alloc/, preload/ names a header of its
 * own layer or a lower one (and every quoted include names a real file). */
Test(layers, include_order) {
  scan_t st;
  scan_all(&st);
  for (int i = 1; i < NLAYERS; i++)
    cr_assert_gt(st.files[i], 0, "no .c/.h files found in %s/%s: nothing to check", SM_SOURCE_DIR, LAYERS[i]);
  cr_assert_gt(st.includes, 0, "no project #include found at all: is the parser broken?");
  cr_assert_eq(st.vlen, 0, "layer order include/ <- slots/ <- alloc/ <- preload/ broken:\n%s", st.violations);
}

/* The checker itself: it resolves paths and ranks layers as intended (so a
 * wrong include cannot pass by a parser mistake). */
Test(layers, checker_self_test) {
  char r[PATH_MAX];
  cr_assert_eq(layer_rank("include"), 0);
  cr_assert_eq(layer_rank("preload"), 3);
  cr_assert_eq(layer_rank("tests"), -1);
  cr_assert_eq(resolve("slots", "slotmalloc.h", 1, r, sizeof r), 0, "slotmalloc.h should resolve to include/");
  cr_assert_eq(resolve("slots", "stdio.h", 0, r, sizeof r), -1, "<stdio.h> is a system header");
  cr_assert_eq(resolve("alloc", "no/such/header.h", 1, r, sizeof r), -2);
}

/* Strips comments, string and character literals (replaced by spaces). */
static void strip_c(char *s) {
  for (char *p = s; *p; p++) {
    if (p[0] == '/' && p[1] == '*') {
      char *e = strstr(p + 2, "*/");
      char *stop = e ? e + 2 : p + strlen(p);
      for (; p < stop; p++)
        if (*p != '\n') *p = ' ';
      p--;
    } else if (p[0] == '/' && p[1] == '/') {
      for (; *p && *p != '\n'; p++) *p = ' ';
      if (!*p) return;
    } else if (*p == '"' || *p == '\'') {
      char q = *p++;
      for (; *p && *p != q && *p != '\n'; p++) {
        if (*p == '\\' && p[1]) *p++ = ' ';
        *p = ' ';
      }
      if (!*p) return;
    }
  }
}

/* Only slots/ (the OS layer) calls mmap, munmap, mremap, madvise, mprotect. */
Test(layers, os_calls_only_in_slots) {
  static const char *const calls[] = {"mmap", "mmap64", "munmap", "mremap", "madvise", "mprotect", NULL};
  char report[4096] = "";
  size_t rl = 0;
  int files = 0;
  for (int i = 2; i < NLAYERS; i++) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", SM_SOURCE_DIR, LAYERS[i]);
    DIR *d = opendir(dir);
    if (!d) continue;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (!is_source(e->d_name)) continue;
      char path[PATH_MAX];
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      char *text = slurp(path);
      strip_c(text);
      files++;
      for (int c = 0; calls[c]; c++) {
        size_t n = strlen(calls[c]);
        for (char *h = strstr(text, calls[c]); h; h = strstr(h + 1, calls[c])) {
          int starts = h == text || !(isalnum((unsigned char)h[-1]) || h[-1] == '_');
          char *a = h + n;
          while (*a == ' ' || *a == '\t' || *a == '\n') a++;
          int ends = !(isalnum((unsigned char)h[n]) || h[n] == '_');
          if (starts && ends && *a == '(' && rl < sizeof report - 200)
            rl += (size_t)snprintf(report + rl, sizeof report - rl, "  %s/%s calls %s()\n", LAYERS[i], e->d_name,
                                   calls[c]);
        }
      }
      free(text);
    }
    closedir(d);
  }
  cr_assert_gt(files, 0, "no sources found in alloc/ or preload/");
  cr_assert_eq(rl, 0, "OS memory calls outside slots/:\n%s", report);
}
