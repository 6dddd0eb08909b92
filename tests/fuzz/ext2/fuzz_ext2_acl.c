/* libFuzzer harness for fsmods/ext2/acl.c: any bytes as an ACL value must be rejected or
 * processed without touching memory outside the value. */
#include "acl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	mode_t mode = (mode_t)(data[0] | data[1] << 8) & 07777;
	size -= 2;
	unsigned char *v = malloc(size ? size : 1);
	memcpy(v, data + 2, size);
	acl_count(v, size);
	acl_inherit(v, size, &mode);
	memcpy(v, data + 2, size);
	acl_chmod(v, size, mode);
	free(v);
	return 0;
}
