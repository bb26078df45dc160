/* os.h: the operating-system primitives. The only code that calls mmap,
 * munmap, mremap and madvise is os.c. Every function returns NULL / false on
 * failure and never sets errno for the caller to see (callers set ENOMEM). */
#ifndef SMI_OS_H
#define SMI_OS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Maps size bytes of zeroed read-write memory whose address is a multiple of
 * align (a power of two, at least a page); NULL if the OS refuses. */
void *smi_os_map_aligned(size_t size, size_t align);
/* The same, not counted as committed: for memory that is counted a piece at
 * a time as it is first used (smi_os_account_recommit). */
void *smi_os_reserve_aligned(size_t size, size_t align);
/* Maps size bytes of zeroed read-write memory such that (addr + offset) is a
 * multiple of align: used for large objects whose header precedes them. */
void *smi_os_map_offset_aligned(size_t size, size_t align, size_t offset);
void smi_os_unmap(void *p, size_t size);
/* Gives the physical pages back; the range stays mapped and reads as zero. */
void smi_os_decommit(void *p, size_t size);
/* A range for smi_os_discard. */
typedef struct {
  void *p;
  size_t size;
} smi_os_range_t;
/* smi_os_decommit of n ranges: one madvise per range, or with
 * smi_os_batch_discards (SLOTMALLOC_BATCH_MADVISE=1) one process_madvise call
 * for up to 64 of them where the kernel allows it (Linux 6.13 and later) and
 * no seccomp filter is in force. */
extern bool smi_os_batch_discards;
void smi_os_decommit_ranges(const smi_os_range_t *r, size_t n);
/* The same, not counted as decommitted: for pages inside memory the caller
 * still counts as committed (a block's free slots). */
void smi_os_discard(const smi_os_range_t *r, size_t n);
/* Counts size bytes as decommitted, for memory given back with
 * smi_os_discard (whose ranges may run over memory decommitted before). */
void smi_os_account_decommit(size_t size);
/* Unmaps memory already decommitted (not counted as committed any more). */
void smi_os_release(void *p, size_t size);
/* Maps [p, p+size) again after smi_os_release, only if nothing else took that
 * range meanwhile; the memory reads as zero and is not counted as committed
 * until it is (smi_os_account_recommit). */
bool smi_os_reacquire(void *p, size_t size);
/* Grows a mapping in place (no move); false if the pages after it are taken. */
bool smi_os_grow_in_place(void *p, size_t old_size, size_t new_size);
/* Shrinks a mapping in place. */
void smi_os_shrink(void *p, size_t old_size, size_t new_size);
/* Says whether a mapping may be placed at [dest, dest+size) (the caller's
 * bookkeeping of that range is ready); called before it is. */
typedef bool (*smi_os_ready_fn)(void *dest, size_t size);
/* Moves a mapping to a new address aligned like smi_os_map_offset_aligned,
 * keeping its pages (no copy); NULL if the OS refuses or ready does. */
void *smi_os_move(void *p, size_t old_size, size_t new_size, size_t align, size_t offset, smi_os_ready_fn ready);

/* Makes [p, p+size) inaccessible (PROT_NONE): a guard page of the hardened
 * build; its pages stay counted as they were. false if the OS refuses. */
bool smi_os_guard(void *p, size_t size);
#ifdef SMI_HARDENED
/* Grows the mapping of a hardened large object, [p, p+old_size) laid out as
 * [head, readable][guard][body, readable][guard] with the body at p + off
 * and guard bytes each guard, to new_size bytes (the new trailing guard
 * included): the body grows in place if the pages after it are free, else
 * the body moves to a new address aligned to align, keeping its pages (no
 * copy), between new guards, and the head's first page is copied there (the
 * rest of the head, up to its guard, is alignment padding, never written).
 * The new address, or NULL if the OS refuses or ready does, asked first for
 * the range the mapping would take (then the mapping is as it was). */
void *smi_os_grow_guarded(void *p, size_t old_size, size_t new_size, size_t off, size_t guard, size_t align,
                          smi_os_ready_fn ready);
#endif
/* A table that any address or id may index, of which a program writes few
 * pages (the segment map, the id table): reserved read-only, so its pages
 * read as zero and count toward neither a data-size limit (RLIMIT_DATA) nor
 * the kernel's commit charge, as a table in the library's bss would, whole;
 * each page is made writable when first written. NULL if the OS refuses. */
void *smi_os_table_reserve(size_t size);
/* Makes the pages of [table + from, table + from + len) writable, once each
 * (bits: one per page of the table, set when done); false if the OS refuses
 * (a data-size limit, the commit limit). Any thread, any time. */
bool smi_os_table_write(void *table, _Atomic uint64_t *bits, size_t from, size_t len);
/* size random bytes from the kernel; false if it has none to give. */
bool smi_os_random(void *buf, size_t size);
/* Reads up to size - 1 bytes of the file at path into buf and ends them with
 * a 0; returns how many (0 if it cannot be read). Raw system calls, so no
 * cancellation point (the allocator calls it holding its locks), errno kept. */
size_t smi_os_read_file(const char *path, char *buf, size_t size);

/* When set, new segments prefer the NUMA node of the CPU that maps them
 * (mbind MPOL_PREFERRED); set from the SLOTMALLOC_NUMA option. */
extern bool smi_os_numa_local;

/* Bytes mapped and not decommitted, as the allocator counts them, and their peak. */
size_t smi_os_committed(void);
size_t smi_os_committed_peak(void);
/* Account for pages committed again by touching decommitted memory. */
void smi_os_account_recommit(size_t size);

/* A coarse monotonic clock in milliseconds (for the purge delay). */
uint64_t smi_now_ms(void);

#define SMI_OS_PAGE ((size_t)4096)

#ifdef SMI_OS_FAULTS
/* Fault injection, compiled only into the test build of os.c that
 * tests/oom_prog.c links (tests/CMakeLists.txt); the libraries have none of
 * it. From the call, the calls of the kinds in mask are counted together
 * (from 1), and call n fails as the OS would refuse it (mmap, mremap,
 * mprotect, munmap: ENOMEM; madvise: EAGAIN; nothing done) when mode is
 * SMI_FAULT_ONE and n == nth, SMI_FAULT_FROM and n >= nth, or SMI_FAULT_RANDOM
 * with probability 1/nth (a hash of seed and n); SMI_FAULT_OFF only counts.
 * SMI_OS_FAULTS=mask,mode,nth,seed in the environment sets it at the first call. */
enum {
  SMI_FAULT_MMAP = 1,
  SMI_FAULT_MREMAP = 2,
  SMI_FAULT_MPROTECT = 4,
  SMI_FAULT_MADVISE = 8,
  SMI_FAULT_MUNMAP = 16
};
enum { SMI_FAULT_OFF, SMI_FAULT_ONE, SMI_FAULT_FROM, SMI_FAULT_RANDOM };
void smi_os_faults_set(unsigned mask, int mode, uint64_t nth, uint64_t seed);
/* The calls counted since, and how many of them failed. */
uint64_t smi_os_faults_calls(void);
uint64_t smi_os_faults_failed(void);
#endif

#endif
