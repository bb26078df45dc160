/* blist.h: doubly linked lists of blocks (through block.next/prev): an
 * arena's bins and full list, the pool's lists.
 *
 * Every change keeps the forward links a chain of real blocks at every
 * instant (a push writes the new block's links before linking it in; a remove
 * unlinks before it clears), so a fork child can rebuild a list that a
 * vanished thread left half changed from its forward links alone. */
#ifndef SMI_BLIST_H
#define SMI_BLIST_H

#include <stdbool.h>
#include <stddef.h>

#include "slots/segment.h"

typedef struct {
  smi_block_t *head, *tail;
} smi_blist_t;

static inline void smi_blist_push(smi_blist_t *l, smi_block_t *b) {
  b->prev = NULL;
  b->next = l->head;
  if (l->head) l->head->prev = b;
  else l->tail = b;
  l->head = b;
}

/* Appends b: a block that just got room back waits behind the others, so it
 * gathers more frees before it is used again. */
static inline void smi_blist_push_tail(smi_blist_t *l, smi_block_t *b) {
  b->next = NULL;
  b->prev = l->tail;
  if (l->tail) l->tail->next = b;
  else l->head = b;
  l->tail = b;
}

static inline void smi_blist_remove(smi_blist_t *l, smi_block_t *b) {
  if (b->prev) b->prev->next = b->next;
  else l->head = b->next;
  if (b->next) b->next->prev = b->prev;
  else l->tail = b->prev;
  b->next = b->prev = NULL;
}

static inline bool smi_blist_holds(const smi_blist_t *l, const smi_block_t *b) {
  for (const smi_block_t *x = l->head; x; x = x->next)
    if (x == b) return true;
  return false;
}

/* In a fork child: rebuilds the back links and the tail from the forward
 * links; cuts the chain after most blocks (a cycle left by a half-done change). */
static inline void smi_blist_repair(smi_blist_t *l, size_t most) {
  smi_block_t *prev = NULL;
  for (smi_block_t *b = l->head; b; prev = b, b = b->next) {
    if (!most--) {
      if (prev) prev->next = NULL;
      else l->head = NULL;
      break;
    }
    b->prev = prev;
  }
  l->tail = prev;
}

#endif
