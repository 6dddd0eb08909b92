/* Fuzz the whole reader on an image: volume descriptors and session chain, directory records,
 * Rock Ridge (with continuation areas and relocation), Joliet and plain names, multi-extent
 * files and zisofs. The first byte picks the mount options; the rest is the image. Every
 * directory reachable (up to a bound) is listed, every entry stat'ed and read in part. */
#include "fuzz_common.h"
#include "isofs.h"
#include "log.h"

#include <stdint.h>
#include <sys/stat.h>

#define MAX_DIRS 256
#define READ_LEN 70000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static bool quiet;
	if (!quiet) {
		vo_log_init("fuzz_image");
		quiet = true;
	}
	uint8_t how = data[0];
	struct iso_options opt = {
		.norock = how & 1, .nojoliet = how & 2, .map_off = how & 4,
		.check = (how & 8) ? 'r' : 0, .session = (how >> 4) & 3,
		.fmode = 0444, .dmode = 0555,
	};
	struct iso_image *img;
	char err[256];
	if (iso_image_open(fuzz_device(data + 1, size - 1), &opt, &img, err, sizeof err) < 0)
		return 0;
	static uint8_t buf[READ_LEN];
	struct iso_node *queue[MAX_DIRS];
	unsigned head = 0, tail = 0;
	queue[tail++] = img->root;
	while (head < tail) {
		struct iso_node *dir = queue[head++];
		const struct iso_dir *d;
		if (iso_dir_get(img, dir, &d) < 0)
			continue;
		for (uint32_t i = 0; i < d->count; i++) {
			struct iso_node *n = d->ents[i].node, *found;
			struct stat st;
			iso_stat(img, n, &st);
			(void)iso_lookup(img, dir, d->ents[i].name, &found);
			if (n->error)
				continue;
			if (S_ISDIR(n->mode) && tail < MAX_DIRS)
				queue[tail++] = n;
			if (S_ISREG(n->mode)) {
				(void)iso_read(img, n, buf, sizeof buf, 0);
				if (n->size > sizeof buf)
					(void)iso_read(img, n, buf, 4096, n->size - 4096);
				struct iso_piece p[4];
				(void)iso_map(img, n, n->size / 2, 100000, p, 4);
			}
		}
	}
	iso_image_close(img);
	return 0;
}
