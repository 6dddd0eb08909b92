/* libFuzzer harness: the boot sector parser (fat_bpb.c) and the FSInfo sector. The input is the
 * start of a volume; the claimed device size comes from its last bytes so that the size checks
 * are fuzzed too. Every geometry accepted must describe regions inside the device. */
#include "fat_bpb.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8)
		return 0;
	uint64_t devsize;
	memcpy(&devsize, data + size - 8, 8);
	devsize %= (1ull << 40);
	struct fat_geometry g;
	char why[128];
	if (fat_bpb_parse(data, size - 8, devsize, &g, why, sizeof why) == 0) {
		/* what later code relies on */
		if (g.data_offset > g.total_bytes || g.total_bytes > devsize ||
		    g.cluster_size == 0 || g.cluster_size > 65536 || g.nfats == 0 ||
		    g.fat_used > g.fat_size || g.state_offset >= 512 ||
		    g.data_offset + (uint64_t)g.cluster_count * g.cluster_size > g.total_bytes)
			abort();
		if (g.type == FAT32 && (g.root_cluster < 2 || g.root_cluster > g.cluster_count + 1))
			abort();
		if (g.type != FAT32 && g.root_offset + (uint64_t)g.root_entries * 32 > g.data_offset)
			abort();
	}
	struct fat_fsinfo fi;
	if (fat_fsinfo_parse(data, size, &fi) == 0 && size >= 512) {
		uint8_t copy[512];
		memcpy(copy, data, 512);
		fat_fsinfo_update(copy, &fi);
		if (memcmp(copy, data, 512) != 0)
			abort(); /* writing back what was read changes nothing */
	}
	return 0;
}
