/* topology: one line describing the machine the harness measures on, read with
 * hwloc: packages, NUMA nodes, cores, hardware threads and the cache sizes. */
#include <hwloc.h>
#include <stdio.h>

static int count(hwloc_topology_t t, hwloc_obj_type_t type) {
  int n = hwloc_get_nbobjs_by_type(t, type);
  return n > 0 ? n : 0;
}

static unsigned long long cache_kib(hwloc_topology_t t, hwloc_obj_type_t type) {
  hwloc_obj_t o = hwloc_get_obj_by_type(t, type, 0);
  return o && o->attr ? (unsigned long long)o->attr->cache.size / 1024 : 0;
}

int main(void) {
  hwloc_topology_t t;
  if (hwloc_topology_init(&t) != 0 || hwloc_topology_load(t) != 0) {
    fprintf(stderr, "topology: hwloc cannot read this machine\n");
    return 1;
  }
  printf("%d package(s), %d NUMA node(s), %d core(s), %d hardware thread(s); L1d %llu KiB, L2 %llu KiB, "
         "L3 %llu KiB\n",
         count(t, HWLOC_OBJ_PACKAGE), count(t, HWLOC_OBJ_NUMANODE), count(t, HWLOC_OBJ_CORE), count(t, HWLOC_OBJ_PU),
         cache_kib(t, HWLOC_OBJ_L1CACHE), cache_kib(t, HWLOC_OBJ_L2CACHE), cache_kib(t, HWLOC_OBJ_L3CACHE));
  hwloc_topology_destroy(t);
  return 0;
}
