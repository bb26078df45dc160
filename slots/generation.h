/* generation.h: bulk operations over a block's generation table, written so
 * the compiler emits vector code (16 generations per instruction). Tables are
 * padded to a multiple of 16 bytes and 16-byte aligned.
 *
 * Memory order: a generation carries no data between threads (the remote
 * list, the locks and the epoch do), so its accesses are relaxed, with one
 * exception: the store that makes a slot live is a release, read with an
 * acquire by a handle's dereference before it reads the block's epoch, so that
 * a generation of a new epoch is never paired with the old epoch. */
#ifndef SMI_GENERATION_H
#define SMI_GENERATION_H

#include <stddef.h>
#include <stdint.h>

/* Advances every live (odd) generation, making its slot free and every handle
 * of it stale: the sweep behind closing an arena. Returns the live slots seen. */
size_t smi_gens_close(uint8_t *gens, size_t n);
/* Fills a fresh table: slot i starts at generation 2i mod 64, so the slots of
 * a block reach the wrap (and retire) spread over 32 rounds of reuse, not all
 * in the same round, and none before its 96th allocation. */
void smi_gens_fresh(uint8_t *gens, size_t n);
/* The generation slot i starts at in a fresh table: a slot whose generation
 * still reads this has not been handed out since its block was cut. */
static inline uint8_t smi_gen_fresh(size_t i) { return (uint8_t)(2 * (i % 16) + ((i / 16) & 1) * 32); }
/* Sets every generation to 0 (before a block is cut anew). */
void smi_gens_clear(uint8_t *gens, size_t n);
/* Counts the live (odd) generations. */
size_t smi_gens_count_live(const uint8_t *gens, size_t n);
/* Table length for n slots: one spare byte past the last slot, padded to 16. */
static inline size_t smi_gens_len(size_t nslots) { return (nslots + 1 + 15) & ~(size_t)15; }

#endif
