/* unit_remote.c: the remote list (slots/segment.h smi_remote_head): other
 * threads' frees into a block are counted in the list's word, and the
 * owner's collect into an empty freelist takes the list whole instead of
 * walking it (slots/segment.c smi_block_collect): the walk was a cache miss
 * on every slot, each written last by another thread. A slot that retires
 * (its generation wrapped in a block a handle named) still makes the collect
 * walk, and retire. Linked with the static library: the blocks are read and
 * collected directly, while their owner thread waits. */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/internal.h"
#include "slots/valgrind.h"
#include "testutil.h"

#define SIZE 256
#define FREED 10

static struct {
  tu_stage_t stage; /* 1: the owner filled a block; 2: it may end */
  smi_block_t *b;
  void *objs[512]; /* the block's objects */
  size_t n;
} own = {TU_STAGE_INIT, NULL, {0}, 0};

static void set_stage(int s) { tu_stage_set(&own.stage, s); }
static void wait_stage(int s) { tu_stage_wait(&own.stage, s); }

/* Fills one block to its last slot (its freelist empty), leaves it by a
 * switch, then waits without calling the allocator. */
static void *owner(void *arg) {
  (void)arg;
  void *p = sm_malloc(SIZE);
  cr_assert_not_null(p);
  own.b = smi_block_of(p);
  own.objs[own.n++] = p;
  void *past;
  for (;;) {
    cr_assert_lt(own.n, 512);
    cr_assert_not_null(past = sm_malloc(SIZE));
    if (smi_block_of(past) != own.b) break;
    own.objs[own.n++] = past;
  }
  cr_assert_null(own.b->free, "the block left still has free slots");
  set_stage(1);
  wait_stage(2);
  sm_free(past);
  return NULL;
}

static size_t index_of(void *p) { return smi_slot_index(own.b, (uintptr_t)p); }

/* The valgrind build always walks the list (slots marked for memcheck). The
 * hardened build takes it whole too (its pop checks each slot): its links are
 * encoded (smi_link_dec) and a free slot's second word is zero (smi_gen_enc). */
#define WALKING_BUILD SMI_VG_ON
static smi_free_t *next_of(smi_free_t *f) { return (smi_free_t *)smi_link_dec(own.b, f, f->next); }

Test(remote_list, an_empty_freelist_takes_the_remote_list_whole, .timeout = 60) {
  if (WALKING_BUILD) cr_skip_test("this build walks the remote list");
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, owner, NULL), 0);
  wait_stage(1);
  smi_block_t *b = own.b;
  cr_assert_geq(own.n, FREED);
  uint32_t used = b->used;
  for (size_t i = 0; i < FREED; i++) sm_free(own.objs[i]); /* remote frees, in one batch */
  smi_remote_flush();
  uintptr_t w = atomic_load(&b->remote);
  cr_assert_eq(smi_remote_count(w), FREED, "the list's word counts %u slots", smi_remote_count(w));
  cr_assert_eq(w & SMI_REMOTE_MARKED, 0);
  cr_assert_eq(smi_remote_head(w), own.objs[FREED - 1], "the last free is not the list's head");
  cr_assert_eq(smi_block_collect(b), FREED); /* (the owner waits: its collect, done here) */
  cr_assert_eq(b->used, used - FREED);
  cr_assert_eq(atomic_load(&b->remote), 0);
  /* the list as it was, newest first: a walk would have reversed it */
  smi_free_t *f = b->free;
  for (size_t i = FREED; i-- > 0; f = next_of(f)) {
    cr_assert_eq(f, own.objs[i], "freelist slot %zu is not the object freed %zu-th", FREED - 1 - i, i);
    cr_assert_eq(f->gen, smi_gen_enc(b, &b->gens[index_of(own.objs[i])]), "its generation pointer is wrong");
    cr_assert(!smi_gen_is_live(b->gens[index_of(own.objs[i])]));
  }
  cr_assert_null(f, "the freelist goes on past the freed objects");
  /* (the owner may take them again) */
  set_stage(2);
  pthread_join(t, NULL);
  for (size_t i = 0; i < own.n; i++)
    if (i >= FREED) sm_free(own.objs[i]);
}

Test(remote_list, a_slot_that_retires_is_walked_and_retired, .timeout = 60) {
  if (WALKING_BUILD) cr_skip_test("this build walks the remote list");
  pthread_t t;
  own.n = 0;
  own.stage.n = 0;
  cr_assert_eq(pthread_create(&t, NULL, owner, NULL), 0);
  wait_stage(1);
  smi_block_t *b = own.b;
  cr_assert_neq(sm_handle_of(own.objs[0]), 0); /* a handle names the block: a slot that wraps retires */
  __atomic_store_n(&b->gens[index_of(own.objs[1])], SMI_GEN_LAST, __ATOMIC_RELAXED); /* its free wraps */
  uint32_t used = b->used, retired = b->retired;
  for (size_t i = 0; i < FREED; i++) sm_free(own.objs[i]);
  smi_remote_flush();
  uintptr_t w = atomic_load(&b->remote);
  cr_assert_eq(smi_remote_count(w), FREED);
  cr_assert_neq(w & SMI_REMOTE_MARKED, 0, "the list's word does not say a slot on it retires");
  cr_assert_eq(smi_block_collect(b), FREED);
  cr_assert_eq(b->used, used - FREED);
  cr_assert_eq(b->retired, retired + 1);
  size_t n = 0;
  for (smi_free_t *f = b->free; f; f = next_of(f)) {
    cr_assert_neq(f, own.objs[1], "the retired slot is on the freelist");
    n++;
  }
  cr_assert_eq(n, FREED - 1);
  set_stage(2);
  pthread_join(t, NULL);
  for (size_t i = FREED; i < own.n; i++) sm_free(own.objs[i]);
}
