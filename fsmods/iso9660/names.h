/* File names: the three namespaces of an image turned into the names a Linux reader sees.
 *
 *  - plain ISO 9660 identifiers ("README.TXT;1"): with map=normal (the default, as Linux) the
 *    name is lower-cased, a ";1" version is dropped together with a dot just before it, and any
 *    other ';' becomes '.'; map=off shows the identifier as recorded;
 *  - Joliet: big-endian UCS-2 (UTF-16 surrogate pairs accepted) to UTF-8, without a ";1" version
 *    or trailing dots (which Windows writes and Linux has always hidden), cut to 255 bytes at a
 *    character boundary when a long name in a non-Latin script needs more;
 *  - Rock Ridge NM names are bytes and need nothing.
 * A name a Linux file system cannot hold (empty, ".", "..", a '/' or NUL in it, longer than
 * 255 bytes) makes the entry unreachable, and the caller drops it. */
#ifndef ISO9660_NAMES_H
#define ISO9660_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Joliet's longest name (with -joliet-long, 103 UTF-16 units) fits this with room to spare. */
#define ISO_NAME_BUF 1024

/* out must hold len + 1 bytes; returns the mapped length. */
size_t iso_name_map(const uint8_t *raw, size_t len, bool map_off, char *out);
/* out must hold ISO_NAME_BUF bytes; returns the UTF-8 length. */
size_t iso_name_joliet(const uint8_t *raw, size_t len, char *out);

bool iso_name_valid(const char *s, size_t len);
/* Hash and comparison with ASCII case folding for relaxed lookups (check=relaxed); the hash
 * folds case in both modes so that one index serves both. */
uint32_t iso_name_hash(const char *s, size_t len);
bool iso_name_equal(const char *a, size_t alen, const char *b, size_t blen, bool fold);

#endif
