/* libFuzzer harness: the input is a whole disk, scanned as umdev does it (MBR, the EBR chain,
 * and GPT headers, whose checksums the fuzzer will rarely get right: fuzz_gpt covers what lies
 * behind them). Seeds: make-seeds, from tables made by sfdisk. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_disk d;
	if (fuzz_disk_from(&d, data, size) < 0)
		return 0;
	fuzz_scan_and_check(&d);
	free(d.bytes);
	return 0;
}
