/* The DPDK headers Petrel binds to. bindgen reads this at build time. */
#include <rte_config.h>
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_launch.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_prefetch.h>
#include <rte_vhost.h>
#include <rte_ring.h>

/* rte_errno is a per-lcore thread-local behind a macro, which bindgen cannot
 * bind; this accessor is wrapped by wrap_static_fns like DPDK's own inlines. */
static inline int petrel_rte_errno(void) { return rte_errno; }
