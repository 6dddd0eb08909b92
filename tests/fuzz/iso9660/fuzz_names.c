/* Fuzz the name conversions: plain ISO 9660 identifiers (map=normal and off), Joliet UCS-2 /
 * UTF-16 to UTF-8, the validity check and the case-folding hash and comparison. */
#include "names.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 255) /* a directory record holds at most 255 bytes of name */
		size = 255;
	char plain[256], off[256], jol[ISO_NAME_BUF];
	size_t n1 = iso_name_map(data, size, false, plain);
	size_t n2 = iso_name_map(data, size, true, off);
	size_t n3 = iso_name_joliet(data, size, jol);
	if (n1 > size || n2 != size || n3 >= ISO_NAME_BUF)
		abort();
	(void)iso_name_valid(plain, n1);
	(void)iso_name_valid(jol, n3);
	if (iso_name_equal(plain, n1, off, n2, true) &&
	    iso_name_hash(plain, n1) != iso_name_hash(off, n2))
		abort(); /* names equal without case must hash alike */
	return 0;
}
