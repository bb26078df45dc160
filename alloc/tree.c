/* tree.c: the arena tree and the user operations on arenas: new, close,
 * retain/release, enter, promote, steal, merge, limits. The tree is guarded by
 * smi_tree_lock; an arena's block lists by its own lock (taken after it). */
#include <string.h>

#include "internal.h"
#include "check.h"
#include "slots/generation.h"
#include "slots/valgrind.h"

smi_lock_t smi_tree_lock = SMI_LOCK_INIT;

static void link_child(sm_arena_t *parent, sm_arena_t *a) {
  a->parent = parent;
  a->prev_sibling = NULL;
  a->next_sibling = parent->first_child;
  if (parent->first_child) parent->first_child->prev_sibling = a;
  parent->first_child = a;
}

static void unlink_child(sm_arena_t *a) {
  if (!a->parent) return;
  if (a->prev_sibling) a->prev_sibling->next_sibling = a->next_sibling;
  else a->parent->first_child = a->next_sibling;
  if (a->next_sibling) a->next_sibling->prev_sibling = a->prev_sibling;
  a->parent = a->next_sibling = a->prev_sibling = NULL;
}

sm_arena_t *sm_arena_new(sm_arena_t *parent) {
  if (!parent) parent = smi_root_arena();
  if (!parent || smi_arena_is_closed(parent)) {
    errno = parent ? EINVAL : ENOMEM;
    return NULL;
  }
  sm_arena_t *a = smi_meta_alloc(sizeof *a);
  if (!a) {
    errno = ENOMEM;
    return NULL;
  }
  smi_arena_init(a, SMI_ARENA_USER);
  smi_lock(&smi_tree_lock);
  if (smi_arena_is_closed(parent)) { /* closed meanwhile */
    smi_unlock(&smi_tree_lock);
    smi_meta_free(a, sizeof *a);
    errno = EINVAL;
    return NULL;
  }
  link_child(parent, a);
  smi_unlock(&smi_tree_lock);
  return a;
}

sm_arena_t *sm_arena_parent(sm_arena_t *a) {
  if (!a) return NULL;
  smi_lock(&smi_tree_lock);
  sm_arena_t *p = a->parent;
  smi_unlock(&smi_tree_lock);
  return p;
}

/* Empties an arena's revisit stack (its blocks are leaving it); those now on
 * to's full list (a merge: NULL for a close) that other threads freed into go
 * onto to's stack (the flag cleared first, then the remote list read: a
 * remote free that found the flag still set pushed before, and is seen). */
static void drain_revisit(sm_arena_t *a, sm_arena_t *to) {
  smi_block_t *f = atomic_exchange(&a->revisit, NULL);
  while (f) {
    smi_block_t *next = f->revisit_next; /* read before the flag lets it be pushed again */
    atomic_store(&f->queued, 0);
    if (to && f->arena == to && f->owner == smi_owner_full(to) && atomic_load(&f->remote)) smi_revisit_push(to, f);
    f = next;
  }
}

/* Invalidates every object of one arena: a vectorized sweep over each block's
 * generation table, then the blocks go to the dismantle queue. */
static void close_one(sm_arena_t *a) {
  smi_lock(&a->lock);
  smi_check_arena(a, smi_tls_cur == a);
  atomic_store_explicit(&a->state, SMI_ARENA_CLOSED, memory_order_release);
  for (size_t i = 0; i < SMI_DIRECT_BINS; i++) a->direct[i] = &smi_block_none;
  smi_blist_t doomed = {NULL, NULL};
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    if (a->current[cls] != &smi_block_none) smi_blist_push(&doomed, a->current[cls]);
    a->current[cls] = &smi_block_none;
    smi_block_t *b;
    while ((b = a->avail[cls].head) != NULL) {
      smi_blist_remove(&a->avail[cls], b);
      smi_blist_push(&doomed, b);
    }
  }
  smi_block_t *b;
  while ((b = a->full.head) != NULL) {
    smi_blist_remove(&a->full, b);
    smi_blist_push(&doomed, b);
  }
  /* First every block says its arena is gone (frees starting from now report a
   * double free), then the frees already under way end, then the sweep: no
   * other thread writes a generation of these blocks while it runs. */
  for (b = doomed.head; b; b = b->next) {
    __atomic_store_n(&b->arena, NULL, __ATOMIC_SEQ_CST);
    __atomic_store_n(&b->owner, NULL, __ATOMIC_SEQ_CST);
    __atomic_store_n(&b->flags, b->flags | SMI_BLOCK_CLOSED, __ATOMIC_RELEASE);
  }
  for (b = doomed.head; b; b = b->next) {
    smi_block_wait_frees(b);
    smi_vg_block_dies(b); /* valgrind build: memcheck sees each live object die */
    smi_gens_close(b->gens, smi_gens_len(b->nslots));
  }
  drain_revisit(a, NULL); /* after the owners are cleared: nothing is pushed here any more */
  smi_segment_t *large = a->large, *dead = NULL;
  a->large = NULL;
  while (large) {
    smi_segment_t *next = large->large_next;
    if (smi_large_try_kill(large)) {
      large->large_arena = NULL;
      large->large_next = dead;
      dead = large;
    } else {
      smi_large_list_add(a, large); /* killed by a free under way: it unlinks itself */
    }
    large = next;
  }
  smi_unlock(&a->lock);
  while ((b = doomed.head) != NULL) {
    smi_blist_remove(&doomed, b);
    smi_dismantle_push(b);
  }
  while (dead) {
    smi_segment_t *next = dead->large_next;
    smi_dismantle_push_large(dead);
    dead = next;
  }
}

static void close_subtree(sm_arena_t *a) {
  sm_arena_t *c;
  while ((c = a->first_child) != NULL) {
    close_subtree(c);
  }
  close_one(a);
  unlink_child(a);
}

void sm_arena_close(sm_arena_t *a) {
  if (!a || a->type != SMI_ARENA_USER) return;
  smi_lock(&smi_tree_lock);
  if (atomic_load(&a->state) == SMI_ARENA_OPEN) close_subtree(a);
  smi_unlock(&smi_tree_lock);
  if (smi_tls_cur == a) smi_tls_cur = smi_root_arena();
  smi_dismantle(SMI_DISMANTLE_ON_CLOSE); /* a first batch; the rest at later slow paths or sm_collect */
}

void sm_arena_retain(sm_arena_t *a) {
  if (a && a->type == SMI_ARENA_USER) atomic_fetch_add(&a->refs, 1);
}

void sm_arena_release(sm_arena_t *a) {
  if (!a || a->type != SMI_ARENA_USER) return;
  if (atomic_fetch_sub(&a->refs, 1) != 1) return;
  sm_arena_close(a);
  if (smi_tls_cur == a) smi_tls_cur = smi_root_arena();
  smi_meta_free(a, sizeof *a);
}

sm_arena_t *sm_arena_of(const void *p) {
  sm_arena_t *a = smi_arena_of_object(p);
  return a;
}

sm_arena_t *sm_arena_enter(sm_arena_t *a) {
  sm_arena_t *root = smi_root_arena();
  sm_arena_t *prev = smi_tls_cur;
  if (prev == &smi_arena_none || prev == root) prev = NULL;
  if (a && (a->type != SMI_ARENA_USER || smi_arena_is_closed(a))) a = NULL;
  smi_tls_cur = a ? a : root;
  return prev;
}

void *sm_arena_promote(void *p) {
  sm_arena_t *a = smi_arena_of_object(p);
  if (!a) {
    errno = EINVAL;
    return NULL;
  }
  if (a->type != SMI_ARENA_USER) return p;
  smi_lock(&smi_tree_lock);
  sm_arena_t *parent = a->parent;
  smi_unlock(&smi_tree_lock);
  if (!parent) {
    errno = EINVAL;
    return NULL;
  }
  /* Only the calling thread may allocate in an arena it did not enter, unless
   * that arena is a user arena (one allocating thread at a time, the caller's
   * business): an object promoted into a root arena (another thread's, or the
   * orphans') goes to the calling thread's root, which outlives any user arena
   * just the same. */
  if (parent->type != SMI_ARENA_USER) parent = smi_root_arena();
  if (!parent) {
    errno = ENOMEM;
    return NULL;
  }
  size_t size = smi_usable_size(p);
  smi_segment_t *large = smi_large_of(p);
  /* A slot's class keeps its alignment (the hardened build: asked for, the
   * size being the request's); a large object carries the one it was asked for. */
  void *q = smi_arena_alloc(parent, size, large ? large->large_align : smi_hd_slot_align(p), false);
  if (!q) return NULL;
  memcpy(q, p, size);
  smi_free(p);
  return q;
}

static bool is_in_subtree(const sm_arena_t *x, const sm_arena_t *top) {
  for (; x; x = x->parent)
    if (x == top) return true;
  return false;
}

int sm_arena_steal(sm_arena_t *a, sm_arena_t *new_parent) {
  if (!a || !new_parent || a->type != SMI_ARENA_USER) return EINVAL;
  smi_lock(&smi_tree_lock);
  int err = 0;
  if (smi_arena_is_closed(a) || smi_arena_is_closed(new_parent) || is_in_subtree(new_parent, a)) err = EINVAL;
  else {
    unlink_child(a);
    link_child(new_parent, a);
  }
  smi_unlock(&smi_tree_lock);
  return err;
}

static size_t block_bytes(const smi_block_t *b) { return smi_block_live(b) * b->size; }

/* Bytes live in the arena's own objects (slot sizes), under a->lock. */
static size_t own_bytes(sm_arena_t *a) {
  size_t bytes = 0;
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    smi_block_t *b = a->current[cls];
    if (b != &smi_block_none) bytes += block_bytes(b);
    for (b = a->avail[cls].head; b; b = b->next) bytes += block_bytes(b);
  }
  for (smi_block_t *b = a->full.head; b; b = b->next) bytes += block_bytes(b);
  for (smi_segment_t *s = a->large; s; s = s->large_next) bytes += s->large_size;
  return bytes;
}

/* Moves every block and large object of src into dst (both locked). */
static void move_blocks(sm_arena_t *dst, sm_arena_t *src) {
  sm_arena_t *owner = smi_owner_of(dst);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    smi_block_t *b = src->current[cls];
    if (b != &smi_block_none) {
      b->used--; /* no longer anyone's current block */
      smi_blist_push(&src->avail[cls], b);
      src->current[cls] = &smi_block_none;
    }
    while ((b = src->avail[cls].head) != NULL) {
      smi_blist_remove(&src->avail[cls], b);
      __atomic_store_n(&b->owner, owner, __ATOMIC_SEQ_CST);
      __atomic_store_n(&b->arena, dst, __ATOMIC_SEQ_CST);
      smi_block_wait_frees(b); /* frees that read src end before src can be released */
      smi_blist_push(&dst->avail[cls], b);
    }
  }
  for (size_t i = 0; i < SMI_DIRECT_BINS; i++) src->direct[i] = &smi_block_none;
  smi_block_t *b;
  while ((b = src->full.head) != NULL) {
    smi_blist_remove(&src->full, b);
    __atomic_store_n(&b->owner, smi_owner_full(dst), __ATOMIC_SEQ_CST);
    __atomic_store_n(&b->arena, dst, __ATOMIC_SEQ_CST);
    smi_block_wait_frees(b);
    smi_blist_push(&dst->full, b);
  }
  /* src's revisit stack last: a remote free that read src's full tag before
   * the change above pushed its block there, announced in inflight, so by
   * the waits above; those blocks are dst's now (before, the stack was
   * drained first, and such a block stayed marked queued on the stack of an
   * arena that is gone: no free queued it again and dst never collected its
   * remote frees) */
  drain_revisit(src, dst);
  while (src->large) {
    smi_segment_t *seg = src->large;
    smi_large_list_remove(src, seg);
    seg->large_arena = dst;
    smi_large_list_add(dst, seg);
  }
}

int sm_arena_merge(sm_arena_t *dst, sm_arena_t *src) {
  if (!dst || !src || dst == src || src->type != SMI_ARENA_USER) return EINVAL;
  smi_lock(&smi_tree_lock);
  if (smi_arena_is_closed(dst) || smi_arena_is_closed(src) || is_in_subtree(dst, src)) {
    smi_unlock(&smi_tree_lock);
    return EINVAL;
  }
  smi_lock(&dst->lock);
  smi_lock(&src->lock);
  if (dst->limit)
    atomic_fetch_add(&dst->limited_bytes, src->limit ? atomic_load(&src->limited_bytes) : own_bytes(src));
  move_blocks(dst, src);
  atomic_store(&src->state, SMI_ARENA_MERGED);
  smi_unlock(&src->lock);
  smi_unlock(&dst->lock);
  sm_arena_t *c;
  while ((c = src->first_child) != NULL) {
    unlink_child(c);
    link_child(dst, c);
  }
  unlink_child(src);
  smi_unlock(&smi_tree_lock);
  if (smi_tls_cur == src) smi_tls_cur = dst;
  return 0;
}

/* Waits for the frees under way into a's blocks (announced in their inflight). */
static void wait_frees(sm_arena_t *a) {
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    if (a->current[cls] != &smi_block_none) smi_block_wait_frees(a->current[cls]);
    for (smi_block_t *b = a->avail[cls].head; b; b = b->next) smi_block_wait_frees(b);
  }
  for (smi_block_t *b = a->full.head; b; b = b->next) smi_block_wait_frees(b);
}

/* The count of a capped arena is kept by every allocation and free (a free
 * makes its slot's generation dead, then reads a->limit and uncharges), so a
 * new cap over an old one keeps it: a recount there counted an object whose
 * free was between the two as gone already, and its uncharge then took it
 * off a second time (an arena that held only that object counted 2^64 - 1 KiB
 * and refused every allocation: review2::set_limit_while_an_object_is_freed_
 * keeps_the_count). The first cap counts the live bytes, then waits for the
 * frees under way, which read the limit as 0 and uncharge nothing, before the
 * limit is set; a free that the count saw live and that reads the limit
 * before it is set is counted for good (the cap a little tighter, never a
 * count below zero). */
int sm_arena_set_limit(sm_arena_t *a, size_t bytes) {
  if (!a || a->type != SMI_ARENA_USER || smi_arena_is_closed(a)) return EINVAL;
  if (SMI_VG_ON && !bytes) bytes = SIZE_MAX; /* valgrind build: the slow paths only (slots/valgrind.h) */
  smi_lock(&a->lock);
  if (bytes && !a->limit) {
    size_t live = own_bytes(a);
    atomic_thread_fence(memory_order_seq_cst); /* the generations read before the frees' inflight */
    wait_frees(a);
    atomic_store(&a->limited_bytes, live);
  }
  __atomic_store_n(&a->limit, bytes, __ATOMIC_SEQ_CST);
  sm_arena_t *owner = bytes ? NULL : a;
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    smi_block_t *cur = a->current[cls];
    /* (atomic stores: a free on another thread reads the owner without the lock) */
    if (cur != &smi_block_none) __atomic_store_n(&cur->owner, owner, __ATOMIC_RELEASE);
    for (smi_block_t *b = a->avail[cls].head; b; b = b->next) __atomic_store_n(&b->owner, owner, __ATOMIC_RELEASE);
    smi_arena_set_current(a, cls, cur);
  }
  smi_unlock(&a->lock);
  return 0;
}

size_t sm_collect(size_t budget) {
  size_t done = smi_dismantle(budget);
  if (budget == SIZE_MAX) smi_pool_reclaim(smi_tls_cur);
  return done;
}
