/* check.h: the debug build's invariant checks (alloc/check.c).
 *
 * Built with -DSLOTMALLOC_DEBUG=ON, the library sources get SMI_DEBUG=1 and
 * the slow paths call these checks; a violated invariant prints one line
 * naming it, then "slotmalloc: corrupted metadata at 0x..." (smi_report), and
 * aborts. Otherwise every smi_check_* call below is a macro that expands to
 * nothing (its arguments are not evaluated): the release build is unchanged.
 *
 * Where a check may look (the caller's business):
 *   smi_check_block   the block's freelist and counts: only where nothing
 *                     else changes them (the thread allocating in its arena,
 *                     or under the lock that guards its remote collection);
 *                     frees by other threads may race (they are accounted).
 *   smi_check_arena   under a->lock: the lists, tags, current and direct
 *                     slots; with contents, smi_check_block on every block.
 *   smi_check_class   under a->lock: one class's avail list (its first
 *                     blocks), current block (contents) and direct slots.
 *   smi_check_pool    under the pool lock (pool.c passes its lists).
 */
#ifndef SMI_CHECK_H
#define SMI_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

#ifndef SMI_DEBUG
#define SMI_DEBUG 0
#endif

/* Whether the library was built with the checks (the unit test asks). */
bool smi_check_enabled(void);

/* The checks themselves (defined only when SMI_DEBUG; where names the caller).
 * pin: 1 if b is its class's current block (used counts it), else 0. */
void smi_check_block_at(const smi_block_t *b, uint32_t pin, const char *where);
void smi_check_arena_at(const sm_arena_t *a, bool contents, const char *where);
void smi_check_class_at(const sm_arena_t *a, unsigned cls, const char *where);
void smi_check_pool_at(const smi_blist_t *empty, const smi_blist_t *abandoned, const smi_blist_t *abandoned_full,
                       const smi_blist_t *dismantle, bool full, const char *where);
/* A fork child ends the heap of a thread it does not have: such a thread
 * may have stopped inside an owner-only block operation (a fast path, a
 * collect), leaving used or retired half-updated, so from now on (in this
 * process and its children) the count equations are not checked; the
 * structure checks stay. */
void smi_check_forked_now(void);

#if SMI_DEBUG
#define smi_check_block(b, pin) smi_check_block_at((b), (pin), __func__)
#define smi_check_arena(a, contents) smi_check_arena_at((a), (contents), __func__)
#define smi_check_class(a, cls) smi_check_class_at((a), (cls), __func__)
#define smi_check_pool(empty, abandoned, abandoned_full, dismantle, full) \
  smi_check_pool_at((empty), (abandoned), (abandoned_full), (dismantle), (full), __func__)
#define smi_check_forked() smi_check_forked_now()
#else
#define smi_check_block(b, pin) ((void)0)
#define smi_check_arena(a, contents) ((void)0)
#define smi_check_class(a, cls) ((void)0)
#define smi_check_pool(empty, abandoned, abandoned_full, dismantle, full) ((void)0)
#define smi_check_forked() ((void)0)
#endif

#endif
