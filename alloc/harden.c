/* harden.c (alloc/): the slow parts of the hardened build (see harden.h):
 * its three reports, the slow paths' pop, free and realloc hooks, the
 * quarantine's release. Compiled to nothing in the default build. */
#include "internal.h"
#include "out.h"

#ifdef SMI_HARDENED
#include <errno.h>
#include <stdatomic.h>
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
  smi_out_write(STDERR_FILENO, line, n);
  if (smi_opt.abort_on_error) abort();
}

void smi_hd_report_list(const smi_block_t *b, const void *slot) {
  report("corrupted free list in block ", smi_block_base(b), " (slot ", (uintptr_t)slot, true, ")");
}

/* The bytes asked for a live slot object, as its size record says; SIZE_MAX
 * if the record itself was overwritten. */
static size_t record_of(const smi_block_t *b, const void *p) {
  uint32_t e = smi_hd_load32((const uint8_t *)p + b->size - 4) ^ smi_hd_head(b)->canary;
  return e >= SMI_HD_TAIL && e <= b->size ? e - SMI_HD_TAIL : SIZE_MAX;
}

void smi_hd_overflow(const smi_block_t *b, const void *p) {
  size_t n = record_of(b, p);
  if (n != SIZE_MAX) report("heap overflow past the end of ", p, " (", n, false, " bytes asked)");
  else report("heap overflow past the end of ", p, " (its size record overwritten", 0, false, ")");
}

/* ---- allocation ---- */

/* Is p, taken from a list of b, a free slot of b to hand out? Checked before
 * its words are read: a slot start of b, its generation free, then its zero
 * word. false, reported, if not: a write into the zero word, the link word
 * intact (NULL or a slot start of b), is a write after free; the rest is a
 * corrupted list. */
static bool slot_ok_at(const smi_block_t *b, const smi_free_t *p, size_t *at) {
  size_t i;
  if (!smi_hd_slot_of(b, p, &i) || smi_gen_is_live(b->gens[i])) {
    smi_hd_report_list(b, p);
    return false;
  }
  *at = i;
  if (!p->gen) return true;
  uintptr_t link = smi_link_dec(b, p, p->next);
  if (link && !smi_hd_slot_of(b, (void *)link, &i)) smi_hd_report_list(b, p);
  else report("write after free to ", p, NULL, 0, false, NULL);
  return false;
}
static bool slot_ok(const smi_block_t *b, const smi_free_t *p) {
  size_t i;
  return slot_ok_at(b, p, &i);
}

/* The popped slot p of b failed the fast path's check: reported, the freelist
 * dropped (never followed), and the allocation goes on from the slow path. */
void *smi_hd_pop_fail(smi_block_t *b, smi_free_t *p, size_t size) {
  if (slot_ok(b, p)) smi_hd_report_list(b, p); /* (not reached: the fast path checks the same) */
  b->free = NULL;
  return smi_malloc_generic(smi_tls_cur, size, false);
}

void *smi_hd_pop(smi_block_t *b) {
  smi_free_t *p = b->free;
  size_t i;
  if (!slot_ok_at(b, p, &i)) {
    b->free = NULL;
    return NULL;
  }
  b->free = (smi_free_t *)smi_link_dec(b, p, p->next);
  p->next = NULL;
  b->used++;
  smi_gen_make_live(&b->gens[i]);
  return p;
}

/* As the default build's smi_malloc_miss: the medium classes (past 1 KiB, up
 * to the largest slot) pop their current block here, every 16th call taking
 * the whole slow path for its upkeep. (Before, every one took it: pair-8192
 * 277 instructions a pair, the default build's 93.) */
void *smi_hd_malloc_top(sm_arena_t *a, size_t size) {
  if (smi_direct_off(a)) return smi_malloc_generic(a, size, false); /* the direct bins' conditions */
  smi_block_t *b;
  if (size <= SMI_DIRECT_MAX) { /* 1017 to 1024 bytes: the direct bins' last class, not counted */
    b = a->current[smi_class_of(SMI_DIRECT_MAX + SMI_HD_TAIL)];
  } else {
    uint32_t n = a->slow_calls + 1;
    if (size > SMI_SMALL_MAX - SMI_HD_TAIL || smi_unlikely((n & 15) == 0)) return smi_malloc_generic(a, size, false);
    b = a->current[smi_class_of(size + SMI_HD_TAIL)];
    if (b->free) a->slow_calls = n; /* (not the empty bins' stand-in, shared by the threads) */
  }
  smi_free_t *p = b->free;
  if (p) return smi_hd_take(b, p, size); /* the fast path's pop (pair-1024: 140 -> 113 instructions) */
  return smi_hd_malloc_refill(a, b, size);
}

static inline __attribute__((always_inline)) bool cut_old(smi_block_t *b, smi_hd_head_t *h);
static bool recycles(const smi_block_t *b);

void *smi_hd_malloc_refill(sm_arena_t *a, smi_block_t *b, size_t size) {
  /* as alloc_from_class would (a block, not the empty bins' stand-in; no
   * remote frees to collect first), without the rest of the slow path: the
   * pending slots but the newest SMI_HD_QUARANTINE, or all of them once the
   * block has no fresh slots left to cut (extend would fail there). The
   * second is most of larson's refills. (b->free is NULL: the fast path's
   * test.) */
  if (b->nslots && !smi_block_draining(b) && !atomic_load_explicit(&b->remote, memory_order_relaxed)) {
    smi_hd_head_t *h = smi_hd_head(b);
    if (!h->pending) return smi_malloc_generic(a, size, false);
    if (!(recycles(b) && cut_old(b, h))) {
      if (b->bump < b->nslots || !h->pending) return smi_malloc_generic(a, size, false);
      b->free = h->pending; /* smi_hd_unquarantine: the same encoding, checked as they are popped */
      h->pending = h->short_at = NULL;
    }
    return smi_hd_take(b, b->free, size); /* the fast path's pop (a bad slot: reported, then the slow path) */
  }
  return smi_malloc_generic(a, size, false);
}

void smi_hd_stamp_slot(void *p, size_t n) {
  smi_block_t *b = smi_block_of(p);
  if (b) smi_hd_stamp(b, smi_hd_head(b), p, n);
}

bool smi_hd_unquarantine(smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  if (b->free || !h->pending) return false;
  b->free = h->pending; /* the same encoding: checked as they are popped */
  h->pending = h->short_at = NULL;
  return true;
}

/* The slot after e on a list of b (NULL at its end), inside b's slots and
 * 16-aligned (every slot start is) before its link is read: the rest is
 * checked where it is popped, no multiplication here. A bad one is reported
 * and the list ends at e (never followed). */
static smi_free_t *next_checked(smi_block_t *b, smi_free_t *e) {
  smi_free_t *n = (smi_free_t *)smi_link_dec(b, e, e->next);
  uintptr_t off = (uintptr_t)n - (uintptr_t)b->start;
  if (n && (off >= smi_hd_head(b)->span || (off & 15))) {
    smi_hd_report_list(b, n);
    e->next = smi_link_enc(b, e, 0);
    return NULL;
  }
  return n;
}

/* Fresh slots first until the block handed out two pages' worth (two of
 * smi_block_extend's steps) and at least 32 slots, or 128 KiB of them: the
 * pair of a program that allocates and frees one object then cycles through
 * that many slots, and each refill moves dozens, not a page's minus the
 * quarantine (at 256 bytes a refill every 11 pairs, 11 instructions a pair;
 * at 8 KiB one every pair). A refill costs more than its instructions (its
 * branches mispredict): bench pair -z 1024 -s 0.5, 5 interleaved runs,
 * ÷ the default build: 6 slots x2.31, 16 x2.21, 32 x1.95. (128 KiB, not 64:
 * pair-8192's 9 KiB slots cycle through 14, not 7, and refill every 11 pairs,
 * not every 4: 153 -> 140 instructions a pair, CPU x0.93 in 11 interleaved
 * pairs; alloctest and longrun's peak RSS the same.) */
#define RECYCLE_AFTER ((size_t)8192)
#define RECYCLE_SLOTS 32
#define RECYCLE_ALWAYS ((size_t)131072)
static bool recycles(const smi_block_t *b) {
  size_t bytes = (size_t)b->bump * b->size;
  return b->bump >= b->nslots || bytes >= RECYCLE_ALWAYS || (bytes >= RECYCLE_AFTER && b->bump >= RECYCLE_SLOTS);
}

/* A link n read off e, a slot of b's pending list, before it is followed:
 * inside b's slots and 16-aligned (every slot start is), so reading its words
 * stays in the block; the rest is checked where it is popped. */
static inline bool link_ok(const smi_block_t *b, const smi_hd_head_t *h, const smi_free_t *n) {
  uintptr_t off = (uintptr_t)n - (uintptr_t)b->start;
  return off < h->span && !(off & 15);
}

/* A bad link n off e: reported, the list ends at e (n is never followed). */
static SMI_COLD bool bad_link(smi_block_t *b, smi_free_t *e, smi_free_t *n) {
  smi_hd_report_list(b, n);
  e->next = smi_link_enc(b, e, 0);
  return false;
}

/* The cut between a list's newest SMI_HD_QUARANTINE slots and the rest, e the
 * last of those (written next) not a free slot of b: reported (slot_ok), the
 * list dropped. */
static SMI_COLD bool bad_cut(smi_block_t *b, smi_hd_head_t *h, smi_free_t *e) {
  if (slot_ok(b, e)) smi_hd_report_list(b, e); /* (not reached: checked the same before) */
  h->pending = h->short_at = NULL;
  return false;
}

/* The quarantine's cut (b's freelist empty, b recycles): all of b's pending
 * slots but the newest SMI_HD_QUARANTINE onto the freelist. false if the
 * list holds no more than those (then h->short_at remembers its head: until a
 * free pushes another, the next call fails at once, as alloc_from_class's
 * after a failed refill does), or a link is bad (reported). Unrolled: each
 * link checked before it is followed (link_ok), the last of the newest
 * checked as a free slot before its link is written (one multiplication);
 * the first of the rest is not read here: the pop checks it. */
_Static_assert(SMI_HD_QUARANTINE == 4, "cut_old walks 4 slots");
static inline __attribute__((always_inline)) bool cut_old(smi_block_t *b, smi_hd_head_t *h) {
  smi_free_t *e0 = h->pending, *e1, *e2, *e3, *rest;
  if (!e0 || e0 == h->short_at) return false;
  uint64_t key = h->key_next;
  if (!(e1 = (smi_free_t *)((uintptr_t)e0->next ^ key))) goto short_list;
  if (smi_unlikely(!link_ok(b, h, e1))) return bad_link(b, e0, e1);
  if (!(e2 = (smi_free_t *)((uintptr_t)e1->next ^ key))) goto short_list;
  if (smi_unlikely(!link_ok(b, h, e2))) return bad_link(b, e1, e2);
  if (!(e3 = (smi_free_t *)((uintptr_t)e2->next ^ key))) goto short_list;
  if (smi_unlikely(!link_ok(b, h, e3))) return bad_link(b, e2, e3);
  if (!(rest = (smi_free_t *)((uintptr_t)e3->next ^ key))) goto short_list;
  size_t i;
  if (smi_unlikely(!smi_hd_slot_of(b, e3, &i) || smi_gen_is_live(b->gens[i]) || e3->gen))
    return bad_cut(b, h, e3);   /* written next: a free slot of b (the others were only read) */
  e3->next = (smi_free_t *)key; /* smi_link_enc(b, e3, 0): the list's end */
  b->free = rest;
  h->short_at = e0; /* the newest 4 left */
  return true;
short_list:
  h->short_at = e0;
  return false;
}

bool smi_hd_unquarantine_old(smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  if (b->free || !h->pending || !recycles(b)) return false;
  return cut_old(b, h);
}

void smi_hd_unquarantine_tidy(smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  smi_free_t *e = h->pending;
  if (!e) return;
  for (uint32_t k = 1; k < SMI_HD_QUARANTINE; k++)
    if (!(e = next_checked(b, e))) return;
  smi_free_t *rest = next_checked(b, e), *tail = rest, *next;
  if (!rest || !slot_ok(b, e)) return;
  uint32_t n = 1;
  while ((next = next_checked(b, tail)) != NULL) {
    if (++n > b->nslots) { /* a cycle */
      smi_hd_report_list(b, next);
      return;
    }
    tail = next;
  }
  if (!slot_ok(b, tail)) return; /* written next */
  tail->next = smi_link_enc(b, tail, (uintptr_t)b->free);
  e->next = smi_link_enc(b, e, 0);
  b->free = rest;
  h->short_at = h->pending; /* the newest 4 left */
}

/* ---- free and realloc ---- */

/* The bytes asked for a live slot object, as its size record says (the
 * largest possible if the record itself was overwritten). */
static size_t recorded(const smi_block_t *b, const void *p) {
  size_t n = record_of(b, p);
  return n != SIZE_MAX ? n : b->size - SMI_HD_TAIL;
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

void smi_hd_release_local(smi_block_t *b, void *p, uint8_t *g) {
  (void)g;
  smi_hd_head_t *h = smi_hd_head(b);
  smi_hd_pend(h, p, h->pending, h->key_next);
  /* a block without a freelist (a full one, freed into) has room again once
   * it holds more than the quarantine */
  if (!b->free) smi_hd_unquarantine_old(b);
}
#endif
