/* free.c: the free slow path. It sorts out everything the fast path does not
 * take: frees into another thread's (or a closed arena's) block, the first free
 * into a full block, large objects, generation wrap, and every kind of misuse,
 * which it reports without touching any object. */
#include "internal.h"
#include "check.h"
#include "slots/generation.h"
#include "slots/valgrind.h"

/* The slot of u in b, if u is the start of a slot (live or not). The geometry
 * is read with relaxed loads: a caller racing a re-cut of the block (sm_handle_of
 * of an object another thread frees) checks the epoch afterwards. */
static bool slot_of(const smi_block_t *b, uintptr_t u, uint32_t *index) {
  uint32_t n = atomic_load_explicit((_Atomic uint32_t *)&b->nslots, memory_order_acquire);
  size_t i;
  if (!smi_slot_at(u, __atomic_load_n(&b->start, __ATOMIC_RELAXED), __atomic_load_n(&b->magic, __ATOMIC_RELAXED), n,
                   &i))
    return false;
  *index = (uint32_t)i;
  return true;
}

bool smi_slot_is_live(const smi_block_t *b, uintptr_t u, uint32_t *index) {
  if (!slot_of(b, u, index)) return false;
  _Atomic uint8_t *g = smi_gen_at(b, *index); /* (a re-cut may race this) */
  return g && smi_gen_is_live(atomic_load_explicit(g, memory_order_relaxed));
}

/* A free of slot i, whose generation g is not live: a double free if
 * the slot was handed out since its block was cut, an invalid free if it never
 * was: its generation still the fresh one. That test holds until a slot of the
 * block wraps (a wrapped slot passes every value again: a slot that wrapped
 * and retired reads 0, one that wrapped and serves on anything), so in a block
 * with wrapped slots a free slot counts as used, unless it lies past bump
 * (never handed out, or handed out and dropped by upkeep's tidy, which leaves
 * its generation past the fresh one). */
static void report_not_live(const smi_block_t *b, uint32_t i, void *p, uint8_t g) {
  bool wrapped = atomic_load_explicit(&b->wrapped, memory_order_relaxed);
  bool never = g == smi_gen_fresh(i) && (i >= b->bump || !wrapped);
  if (never) smi_report(SMI_ERR_INVALID_FREE, p, 0);
  else smi_report(SMI_ERR_DOUBLE_FREE, p, b->size);
}

/* Frees slot i of b on the thread that owns the block (no atomics). false if
 * the free emptied the block: smi_block_emptied may have handed it to the
 * pool, where another thread can take it and cut it anew at once, so the
 * caller no longer reads it. */
static bool free_local(smi_block_t *b, uint32_t i, void *p) {
  uint8_t g = __atomic_load_n(&b->gens[i], __ATOMIC_RELAXED);
  if (!smi_gen_is_live(g)) {
    report_not_live(b, i, p, g);
    return true;
  }
  sm_arena_t *a = b->arena;
  /* SMI_GEN_LAST wraps to 0; in the hardened build by compare-and-swap, which
   * a racing remote free of the same object may win */
  if (!smi_hd_gen_step(&b->gens[i], g)) {
    smi_report(SMI_ERR_DOUBLE_FREE, p, b->size);
    return true;
  }
  smi_hd_check(b, p); /* hardened build: the canary (the slot is ours alone now) */
  SMI_VG_DIED(p);
  if (g == SMI_GEN_LAST && smi_block_wrap_retires(b, (_Atomic uint8_t *)&b->gens[i])) {
    b->retired++; /* a handle may name it: out of service until the block is cut anew */
  } else if (SMI_HD_ON) {
    smi_hd_release_local(b, p, &b->gens[i]); /* wiped, quarantined */
  } else {
    SMI_VG_LINK_OPEN(p);
    ((smi_free_t *)p)->next = b->free;
    ((smi_free_t *)p)->gen = &b->gens[i];
    SMI_VG_LINK_CLOSE(p);
    b->free = (smi_free_t *)p;
  }
  if (a && a->limit) atomic_fetch_sub(&a->limited_bytes, b->size);
  if (--b->used != 0) return true;
  smi_block_emptied(b);
  return false;
}

/* A remote free queues b, full, on its owner's revisit stack, the push
 * announced in inflight before the owner is read again: a thread that ends
 * clears its blocks' owner, waits for the announced pushes, then empties its
 * stack, so no push lands on the stack of an arena that is gone (disown in
 * arena.c). */
static SMI_COLD void queue_full(smi_block_t *b) {
  atomic_fetch_add_explicit(&b->inflight, 1, memory_order_seq_cst);
  sm_arena_t *owner = __atomic_load_n(&b->owner, __ATOMIC_SEQ_CST);
  if (smi_owner_is_full(owner)) smi_revisit_push(smi_owner_arena(owner), b);
  smi_block_free_done(b);
}

/* Pushes a chain of n already freed slots of b (first .. last, linked
 * through next) onto the block's remote list with one exchange, which counts
 * them in the list's word (smi_remote_head). A slot that must retire (its
 * generation wrapped in a named block) is marked by bit 0 of its own link, so
 * the owner retires it (marked: the chain has one). A full block is queued
 * for its owner, unless it is already (no locked instruction then). */
static void remote_push_chain(smi_block_t *b, smi_free_t *first, smi_free_t *last, uint32_t n, bool marked) {
  SMI_VG_LINK_OPEN(last);
  uintptr_t mark = (uintptr_t)last->next & 1;
  uintptr_t w = atomic_load_explicit(&b->remote, memory_order_relaxed), pushed;
  do {
    last->next = smi_link_enc(b, last, (uintptr_t)smi_remote_head(w) | mark);
    pushed = smi_remote_push_word(w, first, n, marked);
  } while (
      !atomic_compare_exchange_weak_explicit(&b->remote, &w, pushed, memory_order_seq_cst, memory_order_relaxed));
  SMI_VG_LINK_CLOSE(last);
  if (smi_unlikely(smi_remote_count(pushed) == 0)) { /* an abandoned block's last object (smi_remote_bias) */
    smi_pool_drained(b);
    return;
  }
  if (smi_owner_is_full(__atomic_load_n(&b->owner, __ATOMIC_SEQ_CST)) &&
      !atomic_load_explicit(&b->queued, memory_order_seq_cst))
    queue_full(b);
}

/* A freed slot's link, ready for the remote list: next (with the slot's own
 * retire mark) and where its generation is. */
static smi_free_t *remote_link(smi_block_t *b, uint32_t i, void *p, smi_free_t *next, bool wrapped) {
  smi_free_t *f = p;
  smi_hd_release_remote(b, p); /* hardened build: wiped */
  SMI_VG_LINK_OPEN(f);
  f->next = smi_link_enc(b, f, (uintptr_t)next | wrapped);
  f->gen = smi_gen_enc(b, &b->gens[i]);
  SMI_VG_LINK_CLOSE(f); /* before the push: once pushed, the slot may be taken */
  return f;
}

static void remote_push(smi_block_t *b, uint32_t i, void *p, bool wrapped) {
  smi_free_t *f = remote_link(b, i, p, NULL, wrapped);
  remote_push_chain(b, f, f, 1, wrapped);
}

/* ---- the remote batches ---------------------------------------------------------
 * A thread's frees into blocks of root arenas owned by other threads wait in
 * batches, one per block, and reach the block's remote list together: one
 * exchange per batch instead of one per free (a producer and a consumer
 * thread otherwise fight over the list head at every object). A thread holds
 * up to SMI_REMOTE_WAYS batches at once, in a table its heap points to (made
 * at its first such free), each block in one place of it (its descriptor's
 * address picks it): frees into other threads' blocks scatter over many
 * blocks of a few classes, and one batch flushed at every change of block (as
 * before) took an exchange for nearly every free. Their generations move at
 * once (the objects are dead and every handle stale at the free); only their
 * reuse waits. The block keeps counting them as used, so it is never re-cut
 * or given back while they wait. A batch holds at most SMI_REMOTE_BATCH slots
 * and SMI_REMOTE_BYTES bytes (slots that large never wait): what a thread
 * holds back so is at most SMI_REMOTE_WAYS times that, in as many blocks of
 * 64 KiB (the one batch of before held 63 slots of any size back). A batch
 * goes out when full, when another block takes its place, when it was not
 * added to between two sweeps (every 16th allocation slow path of the
 * thread: smi_remote_sweep), and all of them at the thread's exit and at
 * malloc_trim. Blocks of user arenas never wait in a batch: an arena close
 * must see every free under way end (inflight). */
#define SMI_REMOTE_BATCH 64   /* slots a batch holds at most */
#define SMI_REMOTE_BYTES 4096 /* and bytes */
#define SMI_REMOTE_WAYS 64    /* batches a thread holds at once (a power of two) */
typedef struct {
  smi_block_t *block; /* NULL: the place is free */
  smi_free_t *first, *last;
  uint16_t count, full; /* slots in the batch, and at most */
  bool marked;          /* a slot of the batch retires */
  bool touched;         /* added to since the last sweep */
} smi_remote_batch_t;
struct smi_remote_table_s {
  smi_remote_batch_t batch[SMI_REMOTE_WAYS];
  uint32_t held; /* batches in batch[] */
};
/* busy: the thread is changing its table; a signal handler's free meanwhile
 * goes out on its own. off: the thread's heap ended: frees go out one by one. */
static __thread bool batch_busy, batch_off;

unsigned smi_remote_place(const smi_block_t *b) {
  uintptr_t u = (uintptr_t)b; /* descriptors are 128 bytes apart, 63 to a segment */
  return (unsigned)((u >> 7) ^ (u >> SMI_SEG_SHIFT)) & (SMI_REMOTE_WAYS - 1);
}

static void flush_batch(smi_remote_table_t *t, smi_remote_batch_t *e) {
  smi_block_t *b = e->block;
  if (!b) return;
  e->block = NULL;
  t->held--;
  remote_push_chain(b, e->first, e->last, e->count, e->marked);
}

/* Every batch of the table out (all), or those not added to since the last sweep. */
static void flush_table(bool all) {
  smi_heap_t *h = smi_tls_heap;
  smi_remote_table_t *t = h ? h->remote : NULL;
  if (!t || !t->held || batch_busy) return; /* (held: any batch at all) */
  batch_busy = true;
  atomic_signal_fence(memory_order_seq_cst);
  for (smi_remote_batch_t *e = t->batch; e < t->batch + SMI_REMOTE_WAYS; e++) {
    if (all || !e->touched) flush_batch(t, e);
    e->touched = false;
  }
  atomic_signal_fence(memory_order_seq_cst);
  batch_busy = false;
}

void smi_remote_flush(void) { flush_table(true); }

void smi_remote_sweep(void) { flush_table(false); }

void smi_remote_batch_end(void) {
  smi_remote_flush();
  batch_off = true;
  smi_heap_t *h = smi_tls_heap;
  if (h && h->remote && !batch_busy) smi_remote_forget(h);
}

void smi_remote_forget(smi_heap_t *h) {
  smi_remote_table_t *t = h->remote;
  h->remote = NULL;
  if (t) smi_meta_free(t, sizeof *t);
}

/* The thread's table, made at its first batch; NULL if the thread cannot
 * batch: its heap ended (a heap made again by a later thread-exit hook's
 * malloc may never be ended), it has no heap and can have none (its exit
 * flushes: a thread that only frees gets a heap for that), or no memory for
 * a table. Called busy. */
static smi_remote_table_t *batch_table(void) {
  smi_heap_t *h = smi_tls_heap;
  if (smi_likely(h != NULL && h->remote != NULL)) return h->remote;
  if (batch_off) return NULL;
  if (!h && (!smi_process_ready() || !smi_root_arena())) return NULL;
  h = smi_tls_heap;
  if (!h || h->done) return NULL;
  if (!h->remote) h->remote = smi_meta_alloc(sizeof *h->remote);
  return h->remote;
}

static void batch_add(smi_remote_table_t *t, smi_block_t *b, uint32_t i, void *p, bool wrapped) {
  smi_remote_batch_t *e = &t->batch[smi_remote_place(b)];
  if (e->block == b) {
    e->first = remote_link(b, i, p, e->first, wrapped);
    e->marked |= wrapped;
    e->touched = true;
    if (++e->count == e->full) flush_batch(t, e);
    return;
  }
  size_t size = b->size;
  if (size * 2 > SMI_REMOTE_BYTES) { /* (a batch of one: no wait) */
    remote_push(b, i, p, wrapped);
    return;
  }
  flush_batch(t, e); /* another block's, in its place */
  t->held++;
  e->first = e->last = remote_link(b, i, p, NULL, wrapped);
  e->count = 1;
  e->full = size * SMI_REMOTE_BATCH > SMI_REMOTE_BYTES ? (uint16_t)(SMI_REMOTE_BYTES / size) : SMI_REMOTE_BATCH;
  e->marked = wrapped;
  e->touched = true;
  e->block = b;
}

static void remote_free_out(smi_block_t *b, uint32_t i, void *p, bool wrapped) {
  if (batch_busy) { /* a signal handler's free, inside the thread's own */
    remote_push(b, i, p, wrapped);
    return;
  }
  batch_busy = true;
  atomic_signal_fence(memory_order_seq_cst);
  smi_remote_table_t *t = batch_table();
  if (t) batch_add(t, b, i, p, wrapped);
  else remote_push(b, i, p, wrapped);
  atomic_signal_fence(memory_order_seq_cst);
  batch_busy = false;
}

/* Frees slot i of b from a thread that does not own the block. The generation
 * moves by compare-and-swap, so of two racing frees one wins and the other is
 * reported. A free into a user arena's block announces itself (inflight)
 * before it reads the block's arena: closing and merging clear or change that
 * arena and then wait for the announced frees, so a free either sees the
 * arena closing (the object is dead: a double free) or finishes before the
 * close sweeps the generations and before the arena struct can be recycled. */
static void free_remote(smi_block_t *b, uint32_t i, void *p) {
  bool user = __atomic_load_n(&b->flags, __ATOMIC_ACQUIRE) & SMI_BLOCK_USER;
  sm_arena_t *a = NULL;
  if (user) {
    atomic_fetch_add_explicit(&b->inflight, 1, memory_order_seq_cst);
    a = __atomic_load_n(&b->arena, __ATOMIC_SEQ_CST);
    if (!a) { /* its arena is closing or closed */
      smi_block_free_done(b);
      smi_report(SMI_ERR_DOUBLE_FREE, p, b->size);
      return;
    }
  }
  smi_hd_share(b); /* hardened build: the owner's frees into b take the compare-and-swap too */
  /* (a double free can race a re-cut: the generation is the table's as loaded) */
  _Atomic uint8_t *gp = smi_gen_at(b, i);
  uint8_t g = gp ? atomic_load_explicit(gp, memory_order_relaxed) : 0;
  do {
    if (!smi_gen_is_live(g)) {
      if (user) smi_block_free_done(b);
      report_not_live(b, i, p, g);
      return;
    }
  } while (
      !atomic_compare_exchange_weak_explicit(gp, &g, smi_gen_freed(g), memory_order_relaxed, memory_order_relaxed));
  if (a && a->limit) smi_arena_uncharge(a, b->size);
  smi_hd_check(b, p); /* hardened build: the canary */
  SMI_VG_DIED(p);
  bool wrapped = g == SMI_GEN_LAST && smi_block_wrap_retires(b, gp);
  if (user) {
    remote_push(b, i, p, wrapped);
    smi_block_free_done(b);
  } else {
    remote_free_out(b, i, p, wrapped);
  }
}

/* The owner's free of slot i of its own full block (owner tagged full), under
 * the arena's lock: another thread's smi_arena_reclaim may be collecting the
 * block meanwhile, and that collect is what can turn it draining. The first
 * free into a full block makes it available again; a draining one (it takes
 * no new allocation) stays full until its last object (a root's: never
 * closed), freed under the lock. false, nothing done, if the block left the
 * arena meanwhile (closed, merged): then it is not ours. */
static bool free_into_full(smi_block_t *b, sm_arena_t *a, uint32_t i, void *p) {
  smi_lock(&a->lock);
  if (b->owner != smi_owner_full(a)) {
    smi_unlock(&a->lock);
    return false;
  }
  if (smi_block_draining(b) && b->used > 1 && !(b->flags & SMI_BLOCK_USER)) {
    free_local(b, i, p); /* used stays above 0: no smi_block_emptied (it takes the lock) */
    smi_unlock(&a->lock);
    return true;
  }
  smi_blist_remove(&a->full, b);
  __atomic_store_n(&b->owner, smi_owner_of(a), __ATOMIC_RELEASE);
  smi_blist_push_tail(&a->avail[b->cls], b);
  smi_unlock(&a->lock);
  free_local(b, i, p);
  return true;
}

void smi_free_undo(void *p, uint8_t *g) {
  /* The add turned a free slot's generation (0, count c) into (live, c + 1),
   * or 0 for c = 127, and the wrap (live, 127) into (live, 0): so a value
   * past 0 without the live bit was not left by the add but by another
   * thread freeing the same slot meanwhile (its compare-and-swap took the
   * sum for live): a double free, and the slot is not put back. */
  _Atomic uint8_t *gp = (_Atomic uint8_t *)g;
  uint8_t sum = atomic_load_explicit(gp, memory_order_relaxed);
  if ((sum == 0 || smi_gen_is_live(sum)) &&
      atomic_compare_exchange_strong_explicit(gp, &sum, (uint8_t)(sum - SMI_GEN_FREE_ADD), memory_order_relaxed,
                                              memory_order_relaxed)) {
    smi_free_slow(p); /* it reports the double or invalid free, or wraps the slot */
    return;
  }
  int saved = errno;
  smi_report(SMI_ERR_DOUBLE_FREE, p, 0);
  errno = saved;
}

void smi_free_slow(void *p) {
  if (!p) return;
  int saved = errno;
  uintptr_t u = (uintptr_t)p;
  unsigned m = smi_map_of(u);
  if (m == SMI_MAP_SLOTS) {
    smi_block_t *b = smi_block_at(smi_segment_at(u), u);
    uint32_t i;
    if (!slot_of(b, u, &i)) {
      smi_report(SMI_ERR_INVALID_FREE, p, 0);
    } else {
      sm_arena_t *owner = __atomic_load_n(&b->owner, __ATOMIC_ACQUIRE);
      sm_arena_t *cur = smi_tls_cur;
      if (owner == cur) {
        if (free_local(b, i, p)) smi_check_block(b, cur->current[b->cls] == b); /* (not after it went to the pool) */
      } else if (owner == smi_owner_full(cur) && smi_gen_is_live(__atomic_load_n(&b->gens[i], __ATOMIC_RELAXED)) &&
                 free_into_full(b, cur, i, p)) {
        /* (freed: the thread's own full block) */
      } else {
        free_remote(b, i, p);
      }
    }
  } else {
    smi_segment_t *seg = smi_large_of(p);
    if (seg) smi_large_free(seg, p);
    else smi_report(SMI_ERR_INVALID_FREE, p, 0);
  }
  errno = saved;
}

size_t smi_usable_size(const void *p) {
  uintptr_t u = (uintptr_t)p;
  if (smi_map_of(u) == SMI_MAP_SLOTS) {
    smi_block_t *b = smi_block_at(smi_segment_at(u), u);
    uint32_t i;
    return smi_slot_is_live(b, u, &i) ? smi_hd_size_of(b, p) : 0; /* hardened build: the bytes asked */
  }
  smi_segment_t *seg = smi_large_of(p);
  return seg && seg->large_gen == 1 ? seg->large_size : 0;
}

sm_arena_t *smi_arena_of_object(const void *p) {
  uintptr_t u = (uintptr_t)p;
  if (smi_map_of(u) == SMI_MAP_SLOTS) {
    smi_block_t *b = smi_block_at(smi_segment_at(u), u);
    uint32_t i;
    return smi_slot_is_live(b, u, &i) ? __atomic_load_n(&b->arena, __ATOMIC_ACQUIRE) : NULL;
  }
  smi_segment_t *seg = smi_large_of(p);
  return seg && seg->large_gen == 1 ? seg->large_arena : NULL;
}

bool smi_slot_free_checked(smi_block_t *b, uint32_t i, void *p, uint8_t gen) {
  /* The caller (sm_hfree) announced the free in b->inflight before validating
   * the handle, so the block is not re-cut, closed or merged away before the
   * exchange below, and its arena struct stays valid. */
  bool user = __atomic_load_n(&b->flags, __ATOMIC_ACQUIRE) & SMI_BLOCK_USER;
  sm_arena_t *a = __atomic_load_n(&b->arena, __ATOMIC_SEQ_CST);
  uint8_t expect = gen;
  smi_hd_share(b); /* hardened build: as free_remote */
  bool won = __atomic_compare_exchange_n(&b->gens[i], &expect, smi_gen_freed(gen), false, __ATOMIC_RELAXED,
                                         __ATOMIC_RELAXED);
  if (won) {
    if (user && a && a->limit) smi_arena_uncharge(a, b->size);
    SMI_VG_DIED(p);
    /* a handle named it: it retires */
    remote_push(b, i, p, gen == SMI_GEN_LAST && smi_block_wrap_retires(b, (_Atomic uint8_t *)&b->gens[i]));
  }
  return won;
}
