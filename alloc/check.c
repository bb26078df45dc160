/* check.c: the debug build's invariant checks (see check.h). Compiled into
 * every build; only smi_check_enabled() is there unless SMI_DEBUG.
 *
 * A block's slots below bump are each in exactly one state:
 *   live          generation live (slots/generation.h)
 *   free          on the in-place freelist (generation free)
 *   remote        on the remote list (free; SMI_GEN_WRAPPED with bit 0 of its link
 *                 set: wrapped in a named block, so it retires)
 *   retired       generation SMI_GEN_WRAPPED, on no list (it wrapped)
 *   in flight     freed by another thread (generation already free), not yet
 *                 pushed onto the remote list
 * so, walking the freelist and a snapshot of the remote list and then the
 * generations: used == pin + live + remote + (free slots on no list - retired).
 * Frees by other threads only move slots live -> in flight -> remote (pushed
 * after the snapshot), so each is counted once whenever the check reads it:
 * the equation holds while they race. Slots at or past bump were never handed
 * out: free generations. */
#include <stdlib.h>

#include "check.h"
#include "slots/generation.h"
#include "slots/os.h"

bool smi_check_enabled(void) { return SMI_DEBUG != 0; }

#if SMI_DEBUG

/* ---- the report (no stdio, no allocation: we are inside the allocator) ---- */

typedef struct {
  char text[320];
  size_t n;
} line_t;

static void put(line_t *l, const char *s) {
  while (*s && l->n < sizeof l->text - 2) l->text[l->n++] = *s++;
}

static void put_num(line_t *l, uintptr_t v, bool hex) {
  char tmp[24];
  size_t k = 0;
  unsigned base = hex ? 16 : 10;
  do {
    tmp[k++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  if (hex) put(l, "0x");
  while (k && l->n < sizeof l->text - 2) l->text[l->n++] = tmp[--k];
}

/* One line naming the invariant, then the corruption report; always aborts. */
SMI_COLD static void fail(const char *where, const char *kind, const void *obj, const char *what, const void *at,
                          bool nums, size_t x, size_t y) {
  line_t l = {.n = 0};
  put(&l, "slotmalloc: check failed in ");
  put(&l, where);
  put(&l, ": ");
  put(&l, kind);
  put(&l, " ");
  put_num(&l, (uintptr_t)obj, true);
  put(&l, ": ");
  put(&l, what);
  if (at) {
    put(&l, " (at ");
    put_num(&l, (uintptr_t)at, true);
    put(&l, ")");
  }
  if (nums) {
    put(&l, " (");
    put_num(&l, x, false);
    put(&l, " vs ");
    put_num(&l, y, false);
    put(&l, ")");
  }
  l.text[l.n++] = '\n';
  l.text[l.n] = 0;
  smi_message(l.text);
  smi_report(SMI_ERR_CORRUPT, obj, 0);
  abort(); /* corruption always aborts, whatever SLOTMALLOC_ABORT_ON_ERROR says */
}

/* ---- blocks ----------------------------------------------------------------- */

#define MAX_SLOTS 4096 /* more than any block holds (64 KiB of 16-byte slots) */

/* Set in a fork child that retired another thread's heap (see check.h). */
static bool counts_loose;
void smi_check_forked_now(void) { counts_loose = true; }

/* An arena closing on another thread sweeps the generations without touching
 * the counts: a block closed while it was checked is not reported. */
static bool closed_meanwhile(const smi_block_t *b) {
  return __atomic_load_n(&b->flags, __ATOMIC_ACQUIRE) & SMI_BLOCK_CLOSED;
}

#define BLOCK_FAIL(what, at, nums, x, y)                                     \
  do {                                                                       \
    if (!closed_meanwhile(b)) fail(where, "block", b, what, at, nums, x, y); \
    return;                                                                  \
  } while (0)

/* Is p the start of a slot of b (found by division, not by b->magic)? */
static bool slot_at(const smi_block_t *b, uint32_t n, uintptr_t p, uint32_t *index) {
  uintptr_t s = (uintptr_t)b->start;
  if (p < s || p - s >= (uintptr_t)n * b->size) return false;
  uintptr_t off = p - s;
  if (off % b->size) return false;
  *index = (uint32_t)(off / b->size);
  return true;
}

void smi_check_block_at(const smi_block_t *b, uint32_t pin, const char *where) {
  if (b == &smi_block_none) return;
  uint32_t n = __atomic_load_n(&b->nslots, __ATOMIC_ACQUIRE);
  if (!n) return;                          /* not cut (or being cut) */
  if (b->flags & SMI_BLOCK_CLOSED) return; /* the close gave up its counts; the dismantler resets them */
  if (!(b->flags & SMI_BLOCK_FORMATTED)) BLOCK_FAIL("holds slots but is not formatted", NULL, false, 0, 0);
  if (b->flags & SMI_BLOCK_DECOMMITTED) BLOCK_FAIL("in use but decommitted", NULL, false, 0, 0);
  if (n > MAX_SLOTS) BLOCK_FAIL("more slots than a block holds", NULL, true, n, MAX_SLOTS);
  if (b->cls >= SMI_CLASSES) BLOCK_FAIL("size class out of range", NULL, true, b->cls, SMI_CLASSES);
  if (b->size != smi_class_size[b->cls])
    BLOCK_FAIL("slot size is not its class's", NULL, true, b->size, smi_class_size[b->cls]);
  if (b->kind != smi_kind_of_class(b->cls))
    BLOCK_FAIL("kind does not hold its class", NULL, true, b->kind, smi_kind_of_class(b->cls));
  if (b->magic != SMI_RECIPROCAL(b->size)) BLOCK_FAIL("magic does not match the slot size", NULL, false, 0, 0);
  smi_layout_t l = smi_block_layout(b, b->size);
  if (b->gens != l.gens) BLOCK_FAIL("generation table is not where the layout puts it", b->gens, false, 0, 0);
  if (b->start != l.start || n != l.nslots)
    BLOCK_FAIL("slots are not where the layout puts them", b->start, true, n, l.nslots);
  uint32_t bump = b->bump, retired = b->retired, used = b->used;
  if (bump > n) BLOCK_FAIL("bump past the last slot", NULL, true, bump, n);
  if (retired > bump) BLOCK_FAIL("more slots retired than ever handed out", NULL, true, retired, bump);
  if (used < pin) BLOCK_FAIL("current block not pinned (used 0)", NULL, false, 0, 0);

  uint64_t seen[MAX_SLOTS / 64] = {0};
  uint32_t nremote = 0, nfree = 0, i;
  /* The remote list, from a snapshot of its head: pushes after it do not
   * change the slots below it, and only we collect. */
  uintptr_t remote = atomic_load_explicit(&b->remote, memory_order_acquire);
  for (uintptr_t p = (uintptr_t)smi_remote_head(remote); p;) {
    if (!slot_at(b, n, p, &i)) BLOCK_FAIL("remote list link is not a slot start", (void *)p, false, 0, 0);
    if (i >= bump) BLOCK_FAIL("remote list holds a slot never handed out", (void *)p, true, i, bump);
    if (seen[i / 64] & ((uint64_t)1 << (i % 64))) BLOCK_FAIL("remote list has a cycle", (void *)p, false, 0, 0);
    seen[i / 64] |= (uint64_t)1 << (i % 64);
    nremote++;
    uintptr_t link = (uintptr_t)__atomic_load_n(&((smi_free_t *)p)->next, __ATOMIC_RELAXED);
    uint8_t g = __atomic_load_n(&b->gens[i], __ATOMIC_RELAXED);
    if (link & 1 ? g != SMI_GEN_WRAPPED : smi_gen_is_live(g))
      BLOCK_FAIL(link & 1 ? "remote slot marked wrapped, generation not 0" : "remote slot generation live", (void *)p,
                 true, g, link & 1);
    p = link & ~(uintptr_t)1;
  }
  /* its count, in the same word as its head (0: pushed by hand, uncounted;
   * an abandoned block's is biased by minus its live objects: smi_remote_bias) */
  uint32_t counted = smi_remote_count(remote);
  if (b->flags & SMI_BLOCK_ABANDONED) counted = (counted + used) & 0xFFFF;
  if (counted && counted != nremote)
    BLOCK_FAIL("remote list's count is not its length", smi_remote_head(remote), true, counted, nremote);
  for (smi_free_t *f = b->free; f; f = f->next) {
    uintptr_t p = (uintptr_t)f;
    if (!slot_at(b, n, p, &i)) BLOCK_FAIL("freelist link is not a slot start", f, false, 0, 0);
    if (i >= bump) BLOCK_FAIL("freelist holds a slot never handed out (past bump)", f, true, i, bump);
    if (seen[i / 64] & ((uint64_t)1 << (i % 64)))
      BLOCK_FAIL("freelist has a cycle or shares a slot with the remote list", f, false, 0, 0);
    seen[i / 64] |= (uint64_t)1 << (i % 64);
    nfree++;
    if (smi_gen_is_live(b->gens[i])) BLOCK_FAIL("free slot has a live generation", f, true, b->gens[i], i);
    if (f->gen != &b->gens[i]) BLOCK_FAIL("free slot does not point at its generation", f->gen, true, i, 0);
  }
  uint32_t live = 0, loose = 0, loose0 = 0; /* loose: not live, on no list (retired or in flight) */
  for (i = 0; i < bump; i++) {
    if (seen[i / 64] & ((uint64_t)1 << (i % 64))) continue;
    uint8_t g = __atomic_load_n(&b->gens[i], __ATOMIC_RELAXED);
    if (smi_gen_is_live(g)) live++;
    else {
      loose++;
      loose0 += g == 0;
    }
  }
  for (i = bump; i < n; i++)
    if (smi_gen_is_live(b->gens[i]))
      BLOCK_FAIL("a slot never handed out (past bump) is live", smi_slot_addr(b, i), true, i, bump);
  /* The whole table (the spare byte and the padding too) holds no other live
   * generation (other threads' frees only lower the count meanwhile). */
  size_t all = smi_gens_count_live(b->gens, smi_gens_len(n));
  if (all > live) BLOCK_FAIL("live generations past the slots (spare byte, padding)", b->gens, true, all, live);
  if (counts_loose) return; /* a fork child: a vanished thread may have left them half-updated */
  if (loose0 < retired)
    BLOCK_FAIL("retired count above the slots at generation 0 on no list", NULL, true, retired, loose0);
  size_t want = (size_t)pin + live + nremote + (loose - retired);
  if (used != want)
    BLOCK_FAIL("used disagrees with the slots (used vs pin + live + remote + in flight)", NULL, true, used, want);
  if (nfree + nremote + live + loose + (n - bump) != n) /* by construction; a guard for the check itself */
    BLOCK_FAIL("slot states do not add up to nslots", NULL, true, nfree + nremote + live + loose + (n - bump), n);
}

/* ---- lists ------------------------------------------------------------------ */

/* A pointer found in a list must be a block descriptor inside a slot segment. */
static bool is_descriptor(const smi_block_t *b) {
  uintptr_t u = (uintptr_t)b;
  if (smi_map_of(u) != SMI_MAP_SLOTS) return false;
  smi_segment_t *seg = smi_segment_at(u);
  uintptr_t first = (uintptr_t)seg->blocks;
  if (u < first || (u - first) % sizeof(smi_block_t)) return false;
  return (u - first) / sizeof(smi_block_t) < seg->nblocks;
}

typedef struct {
  const char *where;
  const void *owner; /* the arena (or NULL: the pool) */
  const char *list;  /* which list, for the message */
} walk_t;

static void list_fail(const walk_t *w, const smi_block_t *b, const char *what) {
  line_t l = {.n = 0};
  put(&l, w->list);
  put(&l, ": ");
  put(&l, what);
  fail(w->where, w->owner ? "arena" : "pool", w->owner ? w->owner : (const void *)b, l.text, b, false, 0, 0);
}

/* Walks l (at most most blocks; whole: the walk must reach the end within
 * that, so a cycle is caught): links agree both ways, head and tail right,
 * every entry a descriptor; each block goes to visit. */
static void walk(const walk_t *w, const smi_blist_t *l, size_t most, bool whole,
                 void (*visit)(const walk_t *w, const smi_block_t *b, const void *arg), const void *arg) {
  if (!l->head != !l->tail) list_fail(w, l->head ? l->head : l->tail, "head and tail disagree (one is NULL)");
  const smi_block_t *prev = NULL;
  for (const smi_block_t *b = l->head; b; prev = b, b = b->next) {
    if (!most--) {
      if (whole) list_fail(w, b, "longer than every block there is: a cycle");
      return;
    }
    if (!is_descriptor(b)) list_fail(w, b, "link is not a block descriptor");
    if (b->prev != prev) list_fail(w, b, "prev link does not name the block before");
    visit(w, b, arg);
  }
  if (l->tail != prev) list_fail(w, l->tail, "tail is not the last block");
}

static size_t blocks_there_are(void) { return (size_t)smi_segment_ids_used() * SMI_PAGES_PER_SEG; }

/* The contents passes (every block's freelist and counts) of smi_check_arena
 * and smi_check_pool run at most every CONTENTS_EVERY_MS per process: forced
 * upkeep runs at every sm_collect and before every ENOMEM, which a program
 * may hit in a loop. The structure checks run every time. */
#define CONTENTS_EVERY_MS 5
static bool contents_due(_Atomic uint64_t *last) {
  uint64_t now = smi_now_ms() + CONTENTS_EVERY_MS; /* + : the first call is always due */
  if (now - atomic_load_explicit(last, memory_order_relaxed) < CONTENTS_EVERY_MS) return false;
  atomic_store_explicit(last, now, memory_order_relaxed);
  return true;
}
static _Atomic uint64_t arena_contents_last, pool_contents_last;

/* ---- arenas ----------------------------------------------------------------- */

typedef struct {
  const sm_arena_t *a;
  unsigned cls;  /* the avail list's class; SMI_CLASSES for the full list */
  bool contents; /* also smi_check_block */
} arena_walk_t;

static void check_member(const walk_t *w, const smi_block_t *b, const sm_arena_t *a) {
  if (b->arena != a) list_fail(w, b, "block's arena is not the arena");
  if (b->flags & SMI_BLOCK_CLOSED) list_fail(w, b, "block of an open arena is marked closed");
  if (!(b->flags & SMI_BLOCK_FORMATTED) || !b->nslots) list_fail(w, b, "block is not cut into slots");
  if (b->flags & SMI_BLOCK_DECOMMITTED) list_fail(w, b, "block in use is decommitted");
  if (a->type == SMI_ARENA_USER && !(b->flags & SMI_BLOCK_USER))
    list_fail(w, b, "user arena's block lacks the user flag");
}

static void visit_arena_block(const walk_t *w, const smi_block_t *b, const void *arg) {
  const arena_walk_t *aw = arg;
  const sm_arena_t *a = aw->a;
  check_member(w, b, a);
  if (aw->cls < SMI_CLASSES) {
    if (b->cls != aw->cls) list_fail(w, b, "block of another size class");
    if (b->owner != smi_owner_of(a)) list_fail(w, b, "owner tag is not the arena (NULL while capped)");
  } else {
    if (b->cls >= SMI_CLASSES) list_fail(w, b, "size class out of range");
    if (b->owner != smi_owner_full(a)) list_fail(w, b, "owner tag is not the arena's full tag");
  }
  if (b->cls < SMI_CLASSES && a->current[b->cls] == b) list_fail(w, b, "the current block is on a list too");
  if (aw->contents) smi_check_block_at(b, 0, w->where);
}

static void check_current(const walk_t *w, const sm_arena_t *a, unsigned cls, bool contents) {
  const smi_block_t *cur = a->current[cls];
  if (cur != &smi_block_none) {
    if (!is_descriptor(cur)) list_fail(w, cur, "current block is not a block descriptor");
    check_member(w, cur, a);
    if (cur->cls != cls) list_fail(w, cur, "current block of another size class");
    if (cur->owner != smi_owner_of(a)) list_fail(w, cur, "current block's owner tag is not the arena");
    if (!cur->used) list_fail(w, cur, "current block not pinned (used 0)");
    if (contents) smi_check_block_at(cur, 1, w->where);
  }
  if (smi_class_size[cls] > SMI_DIRECT_MAX) return;
  const smi_block_t *want = smi_direct_off(a) ? &smi_block_none : cur;
  for (size_t i = smi_class_size[cls] >> 4;; i--) {
    if (smi_direct_class[i] != cls) break;
    if (a->direct[i] != want) list_fail(w, a->direct[i], "direct slot does not follow the current block");
    if (i == 0) break;
  }
}

void smi_check_arena_at(const sm_arena_t *a, bool contents, const char *where) {
  if (a == &smi_arena_none) return;
  if (contents) contents = contents_due(&arena_contents_last);
  size_t most = blocks_there_are();
  walk_t w = {.where = where, .owner = a, .list = "current"};
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    w.list = "current/direct";
    check_current(&w, a, cls, contents);
    arena_walk_t aw = {.a = a, .cls = cls, .contents = contents};
    w.list = "avail list";
    walk(&w, &a->avail[cls], most, true, visit_arena_block, &aw);
  }
  arena_walk_t aw = {.a = a, .cls = SMI_CLASSES, .contents = contents};
  w.list = "full list";
  walk(&w, &a->full, most, true, visit_arena_block, &aw);
}

#define CLASS_WALK 64 /* blocks of the avail list looked at per block switch */

void smi_check_class_at(const sm_arena_t *a, unsigned cls, const char *where) {
  if (a == &smi_arena_none) return;
  walk_t w = {.where = where, .owner = a, .list = "current/direct"};
  if (cls >= SMI_CLASSES) list_fail(&w, NULL, "size class out of range");
  check_current(&w, a, cls, true);
  arena_walk_t aw = {.a = a, .cls = cls, .contents = false};
  w.list = "avail list";
  walk(&w, &a->avail[cls], CLASS_WALK, false, visit_arena_block, &aw);
}

/* ---- the pool ----------------------------------------------------------------- */

typedef struct {
  unsigned which; /* 0 empty, 1 abandoned, 2 dismantle */
  unsigned key;   /* kind (empty) or class (abandoned) */
  bool contents;
} pool_walk_t;

static void visit_pool_block(const walk_t *w, const smi_block_t *b, const void *arg) {
  const pool_walk_t *pw = arg;
  if (pw->which == 0) {
    if (b->kind != pw->key % SMI_KINDS_OF_BLOCKS) list_fail(w, b, "block of another kind");
    if (!(b->flags & SMI_BLOCK_DECOMMITTED) != (pw->key < SMI_KINDS_OF_BLOCKS))
      list_fail(w, b, "a warm block is decommitted, or a cold one is not");
    if (b->owner || b->arena) list_fail(w, b, "empty block still has an owner or an arena");
    if (b->used) list_fail(w, b, "empty block has used != 0");
    if (b->flags & SMI_BLOCK_USER) list_fail(w, b, "empty block keeps the user flag");
    const smi_segment_t *seg = smi_segment_at((uintptr_t)b);
    if (!seg->pooled || seg->pooled > seg->nblocks) list_fail(w, b, "its segment's pooled count is out of range");
    if (pw->contents && (b->flags & SMI_BLOCK_FORMATTED) && !(b->flags & SMI_BLOCK_DECOMMITTED))
      smi_check_block_at(b, 0, w->where);
  } else if (pw->which == 1) {
    if (b->cls != pw->key) list_fail(w, b, "block of another size class");
    if (b->owner) list_fail(w, b, "abandoned block has an owner");
    if (b->arena != &smi_orphans) list_fail(w, b, "abandoned block's arena is not the orphans");
    if (!(b->flags & SMI_BLOCK_FORMATTED) || (b->flags & (SMI_BLOCK_CLOSED | SMI_BLOCK_DECOMMITTED)))
      list_fail(w, b, "abandoned block is not a formatted live block");
    if (pw->contents) smi_check_block_at(b, 0, w->where);
  } else {
    if (!(b->flags & SMI_BLOCK_CLOSED)) list_fail(w, b, "block to dismantle is not marked closed");
    if (b->owner || b->arena) list_fail(w, b, "block to dismantle still has an owner or an arena");
  }
}

void smi_check_pool_at(const smi_blist_t *empty, const smi_blist_t *abandoned, const smi_blist_t *abandoned_full,
                       const smi_blist_t *dismantle, bool full, const char *where) {
  size_t most = full ? blocks_there_are() : CLASS_WALK;
  bool contents = full && contents_due(&pool_contents_last);
  walk_t w = {.where = where, .owner = NULL, .list = "pool empty list"};
  for (unsigned k = 0; k < SMI_EMPTY_LISTS; k++) { /* warm lists, then cold ones */
    pool_walk_t pw = {.which = 0, .key = k, .contents = contents};
    walk(&w, &empty[k], most, full, visit_pool_block, &pw);
  }
  if (full) { /* each segment counts its blocks on the empty lists (pooled): the sums agree */
    size_t listed = 0, counted = 0;
    for (unsigned k = 0; k < SMI_EMPTY_LISTS; k++)
      for (const smi_block_t *b = empty[k].head; b; b = b->next) listed++;
    for (uint32_t id = 1; id < smi_segment_ids_used(); id++) {
      smi_segment_t *seg = atomic_load_explicit(&smi_segtab[id].seg, memory_order_acquire);
      if (seg && !smi_segtab[id].is_large) counted += seg->pooled;
    }
    if (listed != counted)
      fail(where, "pool", empty, "blocks on the empty lists vs the segments' pooled counts", NULL, true, listed,
           counted);
  }
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    pool_walk_t pw = {.which = 1, .key = cls, .contents = contents};
    w.list = "pool abandoned list";
    walk(&w, &abandoned[cls], most, full, visit_pool_block, &pw);
    w.list = "pool abandoned-full list";
    walk(&w, &abandoned_full[cls], most, full, visit_pool_block, &pw);
  }
  pool_walk_t pw = {.which = 2, .key = 0, .contents = false};
  w.list = "pool dismantle list";
  walk(&w, dismantle, most, full, visit_pool_block, &pw);
}

#endif /* SMI_DEBUG (otherwise the checks are not built: check.h's macros call nothing) */
