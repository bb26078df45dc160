/* harden.c (alloc/): the slow parts of the hardened build (see harden.h):
 * its three reports, the slow paths' pop, free and realloc hooks, the
 * quarantine's release. Compiled to nothing in the default build. */
#include "internal.h"

#ifdef SMI_HARDENED
#include <stdlib.h>
#include <unistd.h>

/* ---- the reports: one line each, then the abort (as error.c's) ---- */

static size_t put_str(char *out, const char *s) {
  size_t n = 0;
  for (; s[n]; n++) out[n] = s[n];
  return n;
}

static size_t put_num(char *out, uintptr_t v, bool hex) {
  char tmp[24];
  size_t n = 0, k = 0;
  do {
    tmp[n++] = "0123456789abcdef"[hex ? v & 15 : v % 10];
    v = hex ? v >> 4 : v / 10;
  } while (v);
  if (hex) {
    out[k++] = '0';
    out[k++] = 'x';
  }
  while (n) out[k++] = tmp[--n];
  return k;
}

/* "slotmalloc: " what p [mid num end] */
static void report(const char *what, const void *p, const char *mid, uintptr_t num, bool hex, const char *end) {
  char line[200];
  size_t n = put_str(line, "slotmalloc: ");
  n += put_str(line + n, what);
  n += put_num(line + n, (uintptr_t)p, true);
  if (mid) {
    n += put_str(line + n, mid);
    n += put_num(line + n, num, hex);
    n += put_str(line + n, end);
  }
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, n);
  (void)w;
  if (smi_opt.abort_on_error) abort();
}

void smi_hd_report_list(const smi_block_t *b, const void *slot) {
  report("corrupted free list in block ", smi_block_base(b), " (slot ", (uintptr_t)slot, true, ")");
}

void smi_hd_overflow(const smi_block_t *b, const void *p) {
  uint32_t n = smi_hd_load32((const uint8_t *)p + b->size - 4) ^ smi_hd_head(b)->canary;
  if (n <= b->size - SMI_HD_TAIL) report("heap overflow past the end of ", p, " (", n, false, " bytes asked)");
  else report("heap overflow past the end of ", p, " (its size record overwritten", 0, false, ")");
}

/* ---- allocation ---- */

/* Why the popped slot p of b failed, reported; the freelist is dropped (never
 * followed), and the allocation goes on from the slow path. */
void *smi_hd_pop_fail(smi_block_t *b, smi_free_t *p, size_t size) {
  uintptr_t u = (uintptr_t)p;
  size_t i;
  if (!smi_slot_at(u, b->start, b->magic, b->nslots, &i) || smi_gen_is_live(b->gens[i]) ||
      (uintptr_t)p->gen != (uintptr_t)smi_gen_enc(b, &b->gens[i]))
    smi_hd_report_list(b, p);
  else report("write after free to ", p, NULL, 0, false, NULL);
  b->free = NULL;
  return smi_malloc_generic(smi_tls_cur, size, false);
}

void *smi_hd_pop(smi_block_t *b) {
  smi_free_t *p = b->free;
  uintptr_t u = (uintptr_t)p;
  size_t i;
  uint64_t *w = (uint64_t *)p;
  if (!smi_slot_at(u, b->start, b->magic, b->nslots, &i) || smi_gen_is_live(b->gens[i]) ||
      w[1] != (uintptr_t)smi_gen_enc(b, &b->gens[i])) {
    smi_hd_report_list(b, p);
    b->free = NULL;
    return NULL;
  }
  if (b->size > 16 && (w[2] | w[3])) report("write after free to ", p, NULL, 0, false, NULL);
  b->free = (smi_free_t *)smi_link_dec(b, p, p->next);
  w[0] = 0;
  w[1] = 0;
  b->used++;
  smi_gen_make_live(&b->gens[i]);
  return p;
}

void *smi_hd_malloc_top(sm_arena_t *a, size_t size) {
  if (size <= SMI_DIRECT_MAX && !smi_direct_off(a)) { /* the direct bins' conditions: no cap, no profiling */
    smi_block_t *b = a->current[smi_class_of(SMI_DIRECT_MAX + SMI_HD_TAIL)];
    void *p;
    if (b->free && (p = smi_hd_pop(b)) != NULL) {
      smi_hd_stamp(b, smi_hd_head(b), p, size);
      return p;
    }
  }
  return smi_malloc_generic(a, size, false);
}

void smi_hd_stamp_slot(void *p, size_t n) {
  smi_block_t *b = smi_block_of(p);
  if (b) smi_hd_stamp(b, smi_hd_head(b), p, n);
}

bool smi_hd_unquarantine(smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  bool any = false;
  for (uint32_t k = 0; k < SMI_HD_QUARANTINE; k++) {
    smi_free_t *e = h->ring[k];
    if (!e) continue;
    h->ring[k] = NULL;
    e->next = smi_link_enc(b, e, (uintptr_t)b->free);
    b->free = e;
    any = true;
  }
  return any;
}

/* ---- free and realloc ---- */

/* The bytes asked for a live slot object, as its size record says (the
 * largest possible if the record itself was overwritten). */
static size_t recorded(const smi_block_t *b, const void *p) {
  uint32_t n = smi_hd_load32((const uint8_t *)p + b->size - 4) ^ smi_hd_head(b)->canary;
  return n <= b->size - SMI_HD_TAIL ? n : b->size - SMI_HD_TAIL;
}

void smi_hd_check(const smi_block_t *b, const void *p) {
  if (smi_hd_canary_ok(b, smi_hd_head(b), (uintptr_t)p)) return;
  smi_hd_overflow(b, p);
  /* still here (ABORT_ON_ERROR=0): stamped again, so that it is reported once */
  smi_hd_stamp(b, smi_hd_head(b), (void *)p, recorded(b, p));
}

size_t smi_hd_size_of(const smi_block_t *b, const void *p) {
  smi_hd_check(b, p);
  return recorded(b, p);
}

void *smi_hd_restamp(const smi_block_t *b, void *p, size_t n) {
  size_t old = smi_hd_size_of(b, p);
  uint8_t *q = p;
  if (old > n) memset(q + n, 0, old - n); /* the bytes given up read as a fresh slot's */
  memset(q + old, 0, 4);                  /* the old canary */
  smi_hd_stamp(b, smi_hd_head(b), p, n);
  return p;
}

bool smi_hd_gen_step(uint8_t *g, uint8_t from) {
  return __atomic_compare_exchange_n(g, &from, smi_gen_freed(from), false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

void smi_hd_release_remote(const smi_block_t *b, void *p) {
  if (b->size > 16) memset((uint8_t *)p + 16, 0, SMI_HD_WIPE - 16); /* the caller writes both link words next */
}

void smi_hd_release_local(smi_block_t *b, void *p, uint8_t *g) {
  smi_hd_head_t *h = smi_hd_head(b);
  smi_hd_wipe(h->key_gen, b->size, p, g);
  smi_hd_quarantine(b, h, (smi_free_t *)p, h->key_next, b->free);
}
#endif
