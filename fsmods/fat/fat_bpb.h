/* The boot sector layer: the BIOS parameter block (BPB) read into a geometry, the FAT type
 * decided by cluster count (FAT12 below 4085, FAT16 below 65525, as the Microsoft
 * specification says; the label string means nothing), and the FAT32 FSInfo sector. A BPB in
 * the FAT32 layout is FAT32 whatever its count: mkfs.vfat -F 32 makes small volumes with fewer
 * clusters, and Linux and dosfstools read them so.
 *
 * Hand-written because Debian packages no FAT library (see umfuse-fat.c); these are pure
 * functions of the bytes given, so the unit tests and the fuzz harness call them directly.
 * Every field that later code uses as a size, an offset or a count is checked here, so a
 * hostile BPB is refused with a reason instead of steering reads and writes elsewhere. */
#ifndef FAT_BPB_H
#define FAT_BPB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fat_type { FAT12 = 12, FAT16 = 16, FAT32 = 32 };

/* The largest FAT32 cluster count the format allows (cluster numbers end at 0x0FFFFFF6). */
#define FAT32_MAX_CLUSTERS 0x0FFFFFF5u

struct fat_geometry {
	enum fat_type type;
	uint32_t sector_size;         /* bytes: 512, 1024, 2048 or 4096 */
	uint32_t cluster_size;        /* bytes: sector_size * sectors per cluster, at most 64 KiB */
	uint32_t reserved_sectors;
	uint32_t nfats;               /* copies of the FAT, 1 to 4 */
	uint64_t fat_offset;          /* bytes from the volume start to the first FAT */
	uint64_t fat_size;            /* bytes of one FAT as laid out on disk */
	uint64_t fat_used;            /* bytes of it that hold entries 0..cluster_count+1 */
	uint32_t root_entries;        /* FAT12/16: slots of the fixed root directory, else 0 */
	uint64_t root_offset;         /* FAT12/16: bytes to the fixed root directory */
	uint32_t root_cluster;        /* FAT32: first cluster of the root directory */
	uint64_t data_offset;         /* bytes to cluster 2 */
	uint32_t cluster_count;       /* data clusters: valid numbers are 2..cluster_count+1 */
	uint64_t total_bytes;         /* sectors * sector_size, what the volume spans */
	uint32_t fsinfo_sector;       /* FAT32: the FSInfo sector, 0 when there is none */
	uint8_t media;
	bool mirrored;                /* every FAT copy is written (FAT32 may switch that off) */
	uint32_t active_fat;          /* the copy that is read (and the only one written when
	                                 mirroring is off) */
	uint32_t state_offset;        /* the boot-sector byte whose bit 0 is the dirty flag */
	uint32_t volume_id;
	char label[12];               /* from the BPB, trailing spaces removed */
};

/* Parse a boot sector. boot holds at least len bytes from the start of the volume (512 are
 * enough to decide; the sector size must not exceed len); device_size is the size of the
 * source in bytes. Returns 0, or -1 with a short reason in why ("bytes per sector is 1000"). */
int fat_bpb_parse(const uint8_t *boot, size_t len, uint64_t device_size, struct fat_geometry *g,
		  char *why, size_t whylen);

/* Byte offset of cluster c (2..cluster_count+1) on the volume. */
static inline uint64_t fat_cluster_offset(const struct fat_geometry *g, uint32_t c)
{
	return g->data_offset + (uint64_t)(c - 2) * g->cluster_size;
}

/* The dirty flag ("state" byte bit 0, as Linux and dosfstools use it). */
#define FAT_STATE_DIRTY 0x01

/* The FSInfo sector of FAT32: free-cluster count and next-free hint. */
#define FSINFO_UNKNOWN 0xFFFFFFFFu
struct fat_fsinfo {
	uint32_t free_count; /* FSINFO_UNKNOWN when not known */
	uint32_t next_free;  /* FSINFO_UNKNOWN when not known */
};
/* Returns 0 when the three signatures are right, -1 otherwise (then it must not be trusted). */
int fat_fsinfo_parse(const uint8_t *sector, size_t len, struct fat_fsinfo *fi);
/* Writes the two counters into a valid FSInfo sector (signatures included). */
void fat_fsinfo_update(uint8_t *sector, const struct fat_fsinfo *fi);

#endif
