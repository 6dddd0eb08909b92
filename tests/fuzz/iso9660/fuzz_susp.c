/* Fuzz the SUSP / Rock Ridge decoder: the input is a System Use area and, at the same time, the
 * device its continuation areas (CE) point into. */
#include "fuzz_common.h"
#include "isofs.h"
#include "susp.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rr_info rr;
	struct iso_image img = { .dev = fuzz_device(data, size), .dev_size = size };
	(void)susp_parse(&img, data, size > 255 ? 255 : size, &rr);
	vo_block_close(img.dev);
	return 0;
}
