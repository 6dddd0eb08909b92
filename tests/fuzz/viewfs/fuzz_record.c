/* libFuzzer harness for the viewfs layer record parser (viewfs/record.c): any bytes, as found in
 * a file SOURCE/.-/PATH\x7f of a layer the user controls, must parse or be refused without a
 * crash, and whatever parses must format and parse back to the same record. */
#include "record.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vrecord rec, back;
	char err[128];
	if (vrecord_parse((const char *)data, size, &rec, err, sizeof err) < 0)
		return 0;
	size_t len;
	char *text = vrecord_format(&rec, &len);
	if (text) {
		if (vrecord_parse(text, len, &back, err, sizeof err) != 0)
			abort(); /* viewfs wrote something it cannot read back */
		size_t len2;
		char *again = vrecord_format(&back, &len2);
		if (!again || len2 != len || memcmp(again, text, len) != 0)
			abort();
		free(again);
		vrecord_clear(&back);
		free(text);
	}
	vrecord_clear(&rec);
	return 0;
}
