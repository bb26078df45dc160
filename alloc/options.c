/* options.c: runtime options from SLOTMALLOC_* environment variables.
 *
 * One table (SMI_OPTIONS below) names every option: its variable, kind, field
 * of smi_opt, default and range; the initial values of smi_opt come from the
 * same table. Parsing is strict and allocates nothing (environ is scanned in
 * place, numbers are parsed here, messages are built in a stack buffer):
 *   bool   1/0, on/off, yes/no, true/false, in any case
 *   uint   decimal digits only, within the range
 *   size   decimal digits, then an optional K, M, G or T (binary: 1K = 1024,
 *          optionally followed by B or iB); a bare number is in the option's
 *          unit (MiB for SLOTMALLOC_LARGE_CACHE_MB, bytes otherwise); within
 *          the range, overflow rejected
 *   enum   one of its names (SLOTMALLOC_STATS: off, text, json), or a boolean
 *          (0 = the first name, 1 = the second), or its index
 *   str    any non-empty value; smi_opt keeps a copy (a page of its own, not
 *          counted as committed), not a pointer into environ: a program that
 *          sets its process title (postgres, redis, nginx, sshd) writes it
 *          over the environment strings of the initial stack after its first
 *          malloc read them, and the path read at exit was the title's bytes
 *          (test outside_sweep::path_options_survive_a_process_title)
 * An empty value counts as unset. A bad value keeps the default and prints one
 * warning line naming the variable, the value and the default; so a safety
 * option (ABORT_ON_ERROR) never turns off on garbage. A SLOTMALLOC_* variable
 * that is not in the table prints one warning line too.
 *
 * Read at the first heap set-up; read then later if the environment was not
 * there yet (very early preload).
 *
 * A program run in secure-execution mode (set-user-ID or set-group-ID, file
 * capabilities: the kernel's AT_SECURE) reads none of them, as glibc ignores
 * its malloc tunables there: the caller's environment must not choose files
 * the program writes with its privileges (SLOTMALLOC_STATS_FILE appends,
 * SLOTMALLOC_PROF_FILE truncates) nor turn the misuse abort off. */
#define _GNU_SOURCE /* environ */
#include <stddef.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "internal.h"
#include "out.h"
#include "stats.h"
#include "slots/os.h"

enum { OPT_BOOL, OPT_UINT, OPT_SIZE, OPT_ENUM, OPT_STR };

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)

/* X(name after SLOTMALLOC_, kind, field, default, min, max, unit, enum names)
 * default, min and max are in the unit; the field holds default * unit. */
#define SMI_OPTIONS(X)                                                      \
  X("ABORT_ON_ERROR", OPT_BOOL, abort_on_error, 1, 0, 1, 1, NULL)           \
  X("STATS", OPT_ENUM, stats, SMI_STATS_OFF, 0, 2, 1, "off|text|json")      \
  X("STATS_FILE", OPT_STR, stats_file, 0, 0, 0, 1, NULL)                    \
  X("VERBOSE", OPT_UINT, verbose, 0, 0, 2, 1, NULL)                         \
  X("PURGE_DELAY_MS", OPT_UINT, purge_delay_ms, 100, 0, 3600000, 1, NULL)   \
  X("NUMA", OPT_BOOL, numa, 0, 0, 1, 1, NULL)                               \
  X("LARGE_CACHE_MB", OPT_SIZE, large_cache, 128, 0, 1048576, MIB, NULL)    \
  X("PROF_SAMPLE", OPT_SIZE, prof_sample, 0, 0, (uint64_t)1 << 40, 1, NULL) \
  X("PROF_FILE", OPT_STR, prof_file, 0, 0, 0, 1, NULL)                      \
  X("LEAKS", OPT_BOOL, leaks, 0, 0, 1, 1, NULL)                             \
  X("BACKGROUND_PURGE", OPT_BOOL, background_purge, 0, 0, 1, 1, NULL)       \
  X("BATCH_MADVISE", OPT_BOOL, batch_madvise, 0, 0, 1, 1, NULL)

#define SMI_OPT_VALUE_OPT_BOOL(def, unit) (def)
#define SMI_OPT_VALUE_OPT_UINT(def, unit) (def)
#define SMI_OPT_VALUE_OPT_SIZE(def, unit) (def) * (unit)
#define SMI_OPT_VALUE_OPT_ENUM(def, unit) (def)
#define SMI_OPT_VALUE_OPT_STR(def, unit) NULL
#define SMI_OPT_INIT(name, kind, field, def, min, max, unit, names) .field = SMI_OPT_VALUE_##kind(def, unit),
smi_options_t smi_opt = {SMI_OPTIONS(SMI_OPT_INIT)};

typedef struct {
  const char *name; /* after "SLOTMALLOC_" */
  uint8_t kind;     /* OPT_* */
  uint8_t width;    /* bytes of the field */
  uint16_t offset;  /* of the field in smi_options_t */
  uint64_t def, min, max, unit;
  const char *names; /* OPT_ENUM: "a|b|c", value = index */
} opt_t;

#define SMI_OPT_ROW(name, kind, field, def, min, max, unit, names) \
  {name, kind, sizeof(smi_opt.field), offsetof(smi_options_t, field), def, min, max, unit, names},
static const opt_t options[] = {SMI_OPTIONS(SMI_OPT_ROW)};
#define NOPTIONS (sizeof options / sizeof options[0])

static const char prefix[] = "SLOTMALLOC_";
#define PREFIX_LEN (sizeof prefix - 1)

/* ---- a message line in a stack buffer (out.h) ------------------------------- */
typedef smi_out_t line_t;
#define LINE(l)      \
  char l##_buf[320]; \
  line_t l = SMI_OUT_BUF(l##_buf, sizeof l##_buf)

static void put(line_t *l, const char *s) { smi_out_str(l, s); }
/* A value from the environment: at most 48 characters, control bytes as '?'. */
static void put_value(line_t *l, const char *s) {
  size_t k = 0;
  for (; s[k] && k < 48; k++) {
    unsigned char c = (unsigned char)s[k];
    char shown = c < 0x20 || c == 0x7f ? '?' : (char)c;
    smi_out_put(l, &shown, 1);
  }
  if (s[k]) put(l, "...");
}
static void put_enum_name(line_t *l, const char *names, uint64_t index) {
  for (; index && *names; names++)
    if (*names == '|') index--;
  size_t k = 0;
  while (names[k] && names[k] != '|') k++;
  smi_out_put(l, names, k);
}
static void emit(line_t *l) {
  smi_out_put(l, "\n", 1);
  smi_message(l->buf);
}

/* ---- parsing --------------------------------------------------------------------- */
static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

/* s equals word (lower case) in any case; with len: only s's first len bytes. */
static bool eq_word(const char *s, size_t len, const char *word) {
  size_t k = 0;
  for (; k < len && word[k]; k++)
    if (lower(s[k]) != word[k]) return false;
  return k == len && !word[k];
}
static size_t str_len(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

/* 1 or 0, or -1 if s is not a boolean word. */
static int parse_bool(const char *s) {
  static const char *const yes[] = {"1", "on", "yes", "true"}, *const no[] = {"0", "off", "no", "false"};
  size_t len = str_len(s);
  for (size_t i = 0; i < 4; i++) {
    if (eq_word(s, len, yes[i])) return 1;
    if (eq_word(s, len, no[i])) return 0;
  }
  return -1;
}

/* Decimal digits at *s (advanced past them all); false if there are none.
 * *overflow: the number does not fit 64 bits. */
static bool parse_digits(const char **s, uint64_t *out, bool *overflow) {
  const char *p = *s;
  uint64_t v = 0;
  *overflow = false;
  if (*p < '0' || *p > '9') return false;
  for (; *p >= '0' && *p <= '9'; p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) *overflow = true;
    else v = v * 10 + d;
  }
  *s = p;
  *out = v;
  return true;
}

enum { BAD_NONE, BAD_FORM, BAD_RANGE };

/* Parses s for option o into *value (in bytes for sizes). */
static int parse(const opt_t *o, const char *s, uint64_t *value) {
  bool overflow;
  if (o->kind == OPT_BOOL) {
    int b = parse_bool(s);
    if (b < 0) return BAD_FORM;
    *value = (uint64_t)b;
    return BAD_NONE;
  }
  if (o->kind == OPT_ENUM) {
    int b = parse_bool(s);
    if (b >= 0) {
      *value = (uint64_t)b;
      return BAD_NONE;
    }
    size_t len = str_len(s);
    const char *w = o->names;
    for (uint64_t i = 0; *w; i++) {
      size_t k = 0;
      while (w[k] && w[k] != '|') k++;
      if (k == len) {
        size_t j = 0;
        while (j < k && lower(s[j]) == w[j]) j++;
        if (j == k) {
          *value = i;
          return BAD_NONE;
        }
      }
      w += k + (w[k] == '|');
    }
    const char *p = s;
    uint64_t v;
    if (parse_digits(&p, &v, &overflow) && !*p && !overflow && v >= o->min && v <= o->max) {
      *value = v;
      return BAD_NONE;
    }
    return BAD_FORM;
  }
  const char *p = s;
  uint64_t v;
  if (!parse_digits(&p, &v, &overflow)) return BAD_FORM;
  uint64_t scale = o->unit;
  if (o->kind == OPT_SIZE && *p) {
    static const char suffixes[] = "kmgt";
    size_t i = 0;
    while (suffixes[i] && suffixes[i] != lower(*p)) i++;
    if (!suffixes[i]) return BAD_FORM;
    scale = KIB << (10 * i);
    p++;
    if (eq_word(p, str_len(p), "b") || eq_word(p, str_len(p), "ib")) p += str_len(p);
  }
  if (*p) return BAD_FORM;
  if (overflow || v > UINT64_MAX / scale) return BAD_RANGE;
  v *= scale;
  if (v < o->min * o->unit || v > o->max * o->unit) return BAD_RANGE;
  *value = v;
  return BAD_NONE;
}

static void store(const opt_t *o, uint64_t v) {
  char *f = (char *)&smi_opt + o->offset;
  if (o->kind == OPT_BOOL) *(bool *)f = v != 0;
  else if (o->width == 1) *(uint8_t *)f = (uint8_t)v;
  else if (o->width == 4) *(uint32_t *)f = (uint32_t)v;
  else *(uint64_t *)f = v;
}

static void put_default(line_t *l, const opt_t *o) {
  if (o->kind == OPT_ENUM) put_enum_name(l, o->names, o->def);
  else smi_out_dec(l, o->def);
}

static void warn_bad(const opt_t *o, const char *value, int bad) {
  LINE(l);
  put(&l, "slotmalloc: ");
  put(&l, prefix);
  put(&l, o->name);
  put(&l, "=");
  put_value(&l, value);
  if (bad == BAD_RANGE) {
    put(&l, " is out of range (");
    smi_out_dec(&l, o->min);
    put(&l, "..");
    smi_out_dec(&l, o->max);
    put(&l, o->kind == OPT_SIZE && o->unit == 1 ? " bytes)" : ")");
  } else if (o->kind == OPT_BOOL) {
    put(&l, " is not a boolean (1/0, on/off, yes/no, true/false)");
  } else if (o->kind == OPT_ENUM) {
    put(&l, " is not one of ");
    for (const char *w = o->names; *w; w++) {
      char c[2] = {*w == '|' ? '/' : *w, 0};
      put(&l, c);
    }
    put(&l, " or a boolean");
  } else if (o->kind == OPT_SIZE) {
    put(&l, " is not a size (a number, optionally with K, M, G or T)");
  } else {
    put(&l, " is not a number");
  }
  put(&l, "; using the default ");
  put_default(&l, o);
  emit(&l);
}

/* ---- unknown names ----------------------------------------------------------------- */
/* Edit distance of a[0..na) and b[0..nb), up to 32 characters each (else 99). */
static unsigned distance(const char *a, size_t na, const char *b, size_t nb) {
  if (na > 32 || nb > 32) return 99;
  unsigned row[33];
  for (size_t j = 0; j <= nb; j++) row[j] = (unsigned)j;
  for (size_t i = 1; i <= na; i++) {
    unsigned diag = row[0];
    row[0] = (unsigned)i;
    for (size_t j = 1; j <= nb; j++) {
      unsigned up = row[j];
      unsigned best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[nb];
}

/* The table entry whose name is s[0..len), or NULL. */
static const opt_t *find(const char *s, size_t len) {
  for (size_t i = 0; i < NOPTIONS; i++) {
    const char *n = options[i].name;
    size_t k = 0;
    while (k < len && n[k] && n[k] == s[k]) k++;
    if (k == len && !n[k]) return &options[i];
  }
  return NULL;
}

static void warn_unknown(const char *entry, const char *name, size_t len) {
  LINE(l);
  put(&l, "slotmalloc: ");
  put_value(&l, entry);
  put(&l, " is not an option of slotmalloc; ignored");
  const opt_t *best = NULL;
  unsigned best_d = 3; /* suggest a name at most 2 edits away */
  for (size_t i = 0; i < NOPTIONS; i++) {
    unsigned d = distance(name, len, options[i].name, str_len(options[i].name));
    if (d < best_d) best_d = d, best = &options[i];
  }
  if (best) {
    put(&l, " (did you mean ");
    put(&l, prefix);
    put(&l, best->name);
    put(&l, "?)");
  }
  emit(&l);
}

static void print_in_force(void) {
  LINE(l);
  put(&l, "slotmalloc: options");
  for (size_t i = 0; i < NOPTIONS; i++) {
    const opt_t *o = &options[i];
    const char *f = (const char *)&smi_opt + o->offset;
    put(&l, " ");
    put(&l, o->name);
    put(&l, "=");
    if (o->kind == OPT_STR) {
      const char *s = *(const char *const *)f;
      put_value(&l, s ? s : "");
      continue;
    }
    uint64_t v = o->kind == OPT_BOOL ? *(const bool *)f
                 : o->width == 1     ? *(const uint8_t *)f
                 : o->width == 4     ? *(const uint32_t *)f
                                     : *(const uint64_t *)f;
    if (o->kind == OPT_ENUM) put_enum_name(&l, o->names, v);
    else smi_out_dec(&l, v / o->unit);
  }
  emit(&l);
}

/* A copy of s that outlives the environment strings (see the head of the
 * file); s itself if the OS refuses the page. */
static const char *str_copy(const char *s) {
  size_t len = str_len(s) + 1;
  char *c = smi_os_reserve_aligned((len + SMI_OS_PAGE - 1) & ~(SMI_OS_PAGE - 1), SMI_OS_PAGE);
  if (!c) return s;
  for (size_t k = 0; k < len; k++) c[k] = s[k];
  return c;
}

void smi_options_load(void) {
  static bool loaded;
  if (loaded || !environ) return;
  loaded = true;
  bool secure = getauxval(AT_SECURE) != 0; /* set-user-ID and the like: the defaults only */
  for (char **e = secure ? NULL : environ; e && *e; e++) {
    const char *s = *e;
    size_t k = 0;
    while (k < PREFIX_LEN && s[k] == prefix[k]) k++;
    if (k < PREFIX_LEN) continue;
    const char *name = s + PREFIX_LEN;
    size_t len = 0;
    while (name[len] && name[len] != '=') len++;
    if (!name[len]) continue; /* no '=': not a variable */
    const char *value = name + len + 1;
    const opt_t *o = find(name, len);
    if (!o) {
      warn_unknown(s, name, len);
      continue;
    }
    if (!*value) continue; /* empty: unset */
    if (o->kind == OPT_STR) {
      *(const char **)((char *)&smi_opt + o->offset) = str_copy(value);
      continue;
    }
    uint64_t v;
    int bad = parse(o, value, &v);
    if (bad == BAD_NONE) store(o, v);
    else warn_bad(o, value, bad); /* smi_opt keeps its default */
  }
  smi_os_numa_local = smi_opt.numa;
  smi_os_batch_discards = smi_opt.batch_madvise;
  if (smi_opt.verbose) print_in_force();
  smi_stats_setup();
}

size_t smi_path_expand(const char *pattern, char *out, size_t size) {
  if (!pattern || size == 0) return 0;
  size_t n = 0;
  for (const char *p = pattern; *p; p++) {
    char digits[24];
    size_t k = 0;
    if (p[0] == '%' && p[1] == 'p') {
      unsigned long pid = (unsigned long)getpid();
      do {
        digits[k++] = (char)('0' + pid % 10);
        pid /= 10;
      } while (pid);
      p++;
    } else {
      digits[k++] = *p;
    }
    while (k) {
      if (n + 1 >= size) return 0;
      out[n++] = digits[--k];
    }
  }
  out[n] = 0;
  return n;
}
