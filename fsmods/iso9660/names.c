/* See names.h. */
#include "names.h"

#include <string.h>

static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

size_t iso_name_map(const uint8_t *raw, size_t len, bool map_off, char *out)
{
	if (map_off) {
		memcpy(out, raw, len);
		out[len] = '\0';
		return len;
	}
	size_t n = len;
	if (n >= 2 && raw[n - 2] == ';' && raw[n - 1] == '1') {
		n -= 2;
		if (n >= 2 && raw[n - 1] == '.') /* "NAME.;1": no extension at all */
			n--;
	}
	for (size_t i = 0; i < n; i++) {
		char c = (char)raw[i];
		out[i] = c == ';' ? '.' : ascii_lower(c);
	}
	out[n] = '\0';
	return n;
}

static size_t put_utf8(char *out, uint32_t c)
{
	if (c < 0x80) {
		out[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		out[0] = (char)(0xc0 | c >> 6);
		out[1] = (char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		out[0] = (char)(0xe0 | c >> 12);
		out[1] = (char)(0x80 | (c >> 6 & 0x3f));
		out[2] = (char)(0x80 | (c & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | c >> 18);
	out[1] = (char)(0x80 | (c >> 12 & 0x3f));
	out[2] = (char)(0x80 | (c >> 6 & 0x3f));
	out[3] = (char)(0x80 | (c & 0x3f));
	return 4;
}

size_t iso_name_joliet(const uint8_t *raw, size_t len, char *out)
{
	size_t units = len / 2, n = 0; /* an odd last byte is not a character: dropped */
	for (size_t i = 0; i < units && n + 4 < ISO_NAME_BUF; i++) {
		uint32_t c = (uint32_t)raw[2 * i] << 8 | raw[2 * i + 1];
		if (c >= 0xd800 && c <= 0xdbff && i + 1 < units) {
			uint32_t lo = (uint32_t)raw[2 * i + 2] << 8 | raw[2 * i + 3];
			if (lo >= 0xdc00 && lo <= 0xdfff) {
				c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
				i++;
			} else {
				c = 0xfffd;
			}
		} else if (c >= 0xd800 && c <= 0xdfff) {
			c = 0xfffd; /* a lone surrogate: shown as the replacement character */
		}
		n += put_utf8(out + n, c);
	}
	if (n > 2 && out[n - 2] == ';' && out[n - 1] == '1')
		n -= 2;
	while (n >= 2 && out[n - 1] == '.')
		n--;
	if (n > 255) {
		/* 103 characters of a non-Latin script are more than Linux's 255 bytes: keep what
		   fits, cut between characters, so that the file stays reachable */
		n = 255;
		while (n > 0 && ((unsigned char)out[n] & 0xc0) == 0x80)
			n--;
	}
	out[n] = '\0';
	return n;
}

bool iso_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > 255)
		return false;
	if (s[0] == '.' && (len == 1 || (len == 2 && s[1] == '.')))
		return false;
	return memchr(s, '/', len) == NULL && memchr(s, '\0', len) == NULL;
}

uint32_t iso_name_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)ascii_lower(s[i]);
		h *= 16777619u;
	}
	return h;
}

bool iso_name_equal(const char *a, size_t alen, const char *b, size_t blen, bool fold)
{
	if (alen != blen)
		return false;
	if (!fold)
		return memcmp(a, b, alen) == 0;
	for (size_t i = 0; i < alen; i++)
		if (ascii_lower(a[i]) != ascii_lower(b[i]))
			return false;
	return true;
}
