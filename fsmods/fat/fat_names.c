/* See fat_names.h. */
#define _GNU_SOURCE
#include "fat_names.h"

#include "fat_endian.h"

#include <errno.h>
#include <iconv.h>
#include <locale.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

/* ------------------------------------------------------------------ case folding */

static locale_t fold_locale;
static pthread_mutex_t fold_mutex = PTHREAD_MUTEX_INITIALIZER;

void fat_names_init(void)
{
	pthread_mutex_lock(&fold_mutex);
	/* C.UTF-8 carries the full Unicode case tables in glibc, whatever the user's locale. */
	if (!fold_locale)
		fold_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	pthread_mutex_unlock(&fold_mutex);
}

void fat_names_fini(void)
{
	pthread_mutex_lock(&fold_mutex);
	if (fold_locale) {
		freelocale(fold_locale);
		fold_locale = (locale_t)0;
	}
	pthread_mutex_unlock(&fold_mutex);
}

static uint32_t cp_upper(uint32_t c)
{
	if (c < 0x80)
		return c >= 'a' && c <= 'z' ? c - 32 : c;
	return fold_locale ? (uint32_t)towupper_l((wint_t)c, fold_locale) : c;
}

static uint32_t cp_lower(uint32_t c)
{
	if (c < 0x80)
		return c >= 'A' && c <= 'Z' ? c + 32 : c;
	return fold_locale ? (uint32_t)towlower_l((wint_t)c, fold_locale) : c;
}

static bool is_high(uint16_t u) { return u >= 0xD800 && u < 0xDC00; }
static bool is_low(uint16_t u) { return u >= 0xDC00 && u < 0xE000; }

void fat_name_fold(const uint16_t *u, size_t n, uint16_t *out)
{
	for (size_t i = 0; i < n; i++) {
		if (is_high(u[i]) && i + 1 < n && is_low(u[i + 1])) {
			uint32_t c = 0x10000 + ((uint32_t)(u[i] - 0xD800) << 10) + (u[i + 1] - 0xDC00);
			uint32_t f = cp_upper(c);
			if (f < 0x10000 || f > 0x10FFFF)
				f = c; /* a fold that would change the width: keep the name as it is */
			out[i] = (uint16_t)(0xD800 + ((f - 0x10000) >> 10));
			out[i + 1] = (uint16_t)(0xDC00 + ((f - 0x10000) & 0x3FF));
			i++;
			continue;
		}
		uint32_t f = cp_upper(u[i]);
		out[i] = f < 0x10000 && !(f >= 0xD800 && f < 0xE000) ? (uint16_t)f : u[i];
	}
}

uint32_t fat_name_hash(const uint16_t *folded, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h = (h ^ (folded[i] & 0xFF)) * 16777619u;
		h = (h ^ (folded[i] >> 8)) * 16777619u;
	}
	return h;
}

/* ------------------------------------------------------------------ UTF-8 / UTF-16 */

int fat_utf8_to_utf16(const char *str, size_t len, uint16_t *out, size_t max)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = 0;
	for (size_t i = 0; i < len;) {
		uint32_t c = s[i];
		unsigned extra;
		uint32_t min;
		if (c < 0x80) {
			extra = 0, min = 0;
		} else if ((c & 0xE0) == 0xC0) {
			extra = 1, min = 0x80, c &= 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			extra = 2, min = 0x800, c &= 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			extra = 3, min = 0x10000, c &= 0x07;
		} else {
			return -EINVAL;
		}
		for (unsigned k = 1; k <= extra; k++) {
			if (i + k >= len || (s[i + k] & 0xC0) != 0x80)
				return -EINVAL;
			c = c << 6 | (s[i + k] & 0x3F);
		}
		i += extra + 1;
		if (c < min || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000))
			return -EINVAL;
		if (c >= 0x10000) {
			if (n + 2 > max)
				return -ENAMETOOLONG;
			out[n++] = (uint16_t)(0xD800 + ((c - 0x10000) >> 10));
			out[n++] = (uint16_t)(0xDC00 + ((c - 0x10000) & 0x3FF));
		} else {
			if (n + 1 > max)
				return -ENAMETOOLONG;
			out[n++] = (uint16_t)c;
		}
	}
	return (int)n;
}

size_t fat_utf16_to_utf8(const uint16_t *u, size_t n, char *out)
{
	unsigned char *o = (unsigned char *)out;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t c = u[i];
		if (is_high(u[i]) && i + 1 < n && is_low(u[i + 1])) {
			c = 0x10000 + ((c - 0xD800) << 10) + (u[i + 1] - 0xDC00u);
			i++;
		} else if (c >= 0xD800 && c < 0xE000) {
			c = 0xFFFD;
		}
		if (c < 0x80) {
			o[k++] = (unsigned char)c;
		} else if (c < 0x800) {
			o[k++] = (unsigned char)(0xC0 | c >> 6);
			o[k++] = (unsigned char)(0x80 | (c & 0x3F));
		} else if (c < 0x10000) {
			o[k++] = (unsigned char)(0xE0 | c >> 12);
			o[k++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
			o[k++] = (unsigned char)(0x80 | (c & 0x3F));
		} else {
			o[k++] = (unsigned char)(0xF0 | c >> 18);
			o[k++] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
			o[k++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
			o[k++] = (unsigned char)(0x80 | (c & 0x3F));
		}
	}
	o[k] = 0;
	return k;
}

/* ------------------------------------------------------------------ long names */

static bool forbidden_in_long_name(uint16_t c)
{
	return c < 0x20 || c == '"' || c == '*' || c == '/' || c == ':' || c == '<' || c == '>' ||
	       c == '?' || c == '\\' || c == '|';
}

int fat_name_check(const uint16_t *u, size_t *n)
{
	size_t len = *n;
	while (len && u[len - 1] == '.')
		len--;
	if (len == 0 || u[len - 1] == ' ')
		return -EINVAL;
	if (len > FAT_NAME_MAX)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < len; i++)
		if (forbidden_in_long_name(u[i]))
			return -EINVAL;
	*n = len;
	return 0;
}

/* ------------------------------------------------------------------ code pages */

static int cmp_from(const void *a, const void *b)
{
	const uint16_t *x = a, *y = b;
	return (int)*x - (int)*y;
}

int fat_codepage_load(struct fat_codepage *cp, unsigned number, char *why, size_t whylen)
{
	static const unsigned double_byte[] = { 932, 936, 949, 950 };
	memset(cp, 0, sizeof *cp);
	for (size_t i = 0; i < sizeof double_byte / sizeof *double_byte; i++)
		if (number == double_byte[i]) {
			snprintf(why, whylen, "code page %u: double-byte code pages are not supported",
				 number);
			return -1;
		}
	char name[32];
	snprintf(name, sizeof name, "CP%u", number);
	iconv_t ic = iconv_open("UTF-16LE", name);
	if (ic == (iconv_t)-1) {
		snprintf(why, whylen, "unknown code page %u", number);
		return -1;
	}
	cp->number = number;
	unsigned ascii_mismatch = 0;
	for (unsigned b = 0; b < 256; b++) {
		char in = (char)b, outb[8];
		char *ip = &in, *op = outb;
		size_t il = 1, ol = sizeof outb;
		iconv(ic, NULL, NULL, NULL, NULL);
		if (iconv(ic, &ip, &il, &op, &ol) == (size_t)-1 || ol != sizeof outb - 2) {
			cp->to_unicode[b] = 0;
			continue;
		}
		uint16_t u = le16((uint8_t *)outb);
		cp->to_unicode[b] = u;
		if (b >= 0x20 && b < 0x80 && u != b)
			ascii_mismatch++;
		if (b >= 0x80 && u >= 0x80) {
			cp->from_unicode[cp->nfrom].unicode = u;
			cp->from_unicode[cp->nfrom].oem = (uint8_t)b;
			cp->nfrom++;
		}
	}
	iconv_close(ic);
	if (ascii_mismatch) {
		snprintf(why, whylen, "code page %u is not ASCII-based", number);
		return -1;
	}
	qsort(cp->from_unicode, cp->nfrom, sizeof cp->from_unicode[0], cmp_from);
	return 0;
}

int fat_codepage_to_oem(const struct fat_codepage *cp, uint16_t u)
{
	if (u < 0x80)
		return u;
	size_t lo = 0, hi = cp->nfrom;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (cp->from_unicode[mid].unicode == u)
			return cp->from_unicode[mid].oem;
		if (cp->from_unicode[mid].unicode < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

int fat_shortname_mode_parse(const char *s, enum fat_shortname_mode *mode)
{
	static const struct { const char *name; enum fat_shortname_mode mode; } modes[] = {
		{ "mixed", FAT_SN_MIXED }, { "lower", FAT_SN_LOWER },
		{ "win95", FAT_SN_WIN95 }, { "winnt", FAT_SN_WINNT },
	};
	for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
		if (strcmp(s, modes[i].name) == 0) {
			*mode = modes[i].mode;
			return 0;
		}
	return -1;
}

/* ------------------------------------------------------------------ short names */

/* May an OEM byte stand in a short name? (Lower-case ASCII may not: it is upper-cased first.) */
static bool valid_sfn_byte(uint8_t c)
{
	if (c >= 0x80)
		return true;
	if (c < 0x20)
		return false;
	if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return strchr("$%'-_@~`!(){}^#& ", c) != NULL;
}

bool fat_sfn_valid(const uint8_t name[11])
{
	if (name[0] == ' ')
		return false;
	for (int i = 0; i < 11; i++) {
		uint8_t c = name[i];
		if (i == 0 && c == 0x05)
			continue; /* stands for 0xE5 */
		if (!valid_sfn_byte(c) && !(c >= 'a' && c <= 'z'))
			return false;
	}
	return true;
}

enum part_case { CASE_NONE = 0, CASE_UPPER = 1, CASE_LOWER = 2, CASE_MIXED = 3 };

static enum part_case case_of(const uint16_t *u, size_t n)
{
	unsigned seen = CASE_NONE;
	for (size_t i = 0; i < n; i++) {
		uint32_t up = cp_upper(u[i]), low = cp_lower(u[i]);
		if (up == low)
			continue;
		seen |= u[i] == up ? CASE_UPPER : u[i] == low ? CASE_LOWER : CASE_MIXED;
	}
	return (enum part_case)seen;
}

/* Convert one upper-cased unit to an OEM byte fit for a short name; lossy is set when it is
 * not representable (or forbidden in short names) and '_' is used instead. */
static uint8_t to_sfn_byte(const struct fat_codepage *cp, uint16_t folded, bool *lossy)
{
	int b = fat_codepage_to_oem(cp, folded);
	if (b < 0 || !valid_sfn_byte((uint8_t)b) || b == ' ') {
		*lossy = true;
		return '_';
	}
	return (uint8_t)b;
}

/* Does the name fit 8.3 as it is: no leading dot, at most one dot, base 1..8, ext 0..3, no
 * spaces? Sets *dot to the dot's index (or n). */
static bool fits_8_3(const uint16_t *u, size_t n, size_t *dot)
{
	*dot = n;
	for (size_t i = 0; i < n; i++) {
		if (u[i] == ' ')
			return false;
		if (u[i] == '.') {
			if (*dot != n)
				return false;
			*dot = i;
		}
		if (is_high(u[i]) || is_low(u[i]))
			return false;
	}
	if (*dot == 0 || *dot > 8)
		return false;
	if (*dot < n && (n - *dot - 1 > 3 || n - *dot - 1 == 0))
		return false;
	return true;
}

void fat_sfn_plan(const struct fat_codepage *cp, enum fat_shortname_mode mode, const uint16_t *u,
		  size_t n, struct fat_sfn_plan *p)
{
	uint16_t folded[FAT_NAME_MAX];
	if (n > FAT_NAME_MAX)
		n = FAT_NAME_MAX;
	fat_name_fold(u, n, folded);
	memset(p->name, ' ', 11);
	p->lcase = 0;

	size_t dot;
	if (fits_8_3(u, n, &dot)) {
		bool lossy = false;
		for (size_t i = 0; i < dot; i++)
			p->name[i] = to_sfn_byte(cp, folded[i], &lossy);
		for (size_t i = dot + 1; i < n; i++)
			p->name[8 + i - dot - 1] = to_sfn_byte(cp, folded[i], &lossy);
		if (!lossy) {
			p->base_len = (unsigned)dot;
			p->need_tail = false;
			enum part_case bc = case_of(u, dot);
			enum part_case ec = dot < n ? case_of(u + dot + 1, n - dot - 1) : CASE_NONE;
			if (mode == FAT_SN_WINNT) {
				p->need_lfn = bc == CASE_MIXED || ec == CASE_MIXED;
				if (!p->need_lfn)
					p->lcase = (uint8_t)((bc == CASE_LOWER ? FAT_LCASE_BASE : 0) |
							     (ec == CASE_LOWER ? FAT_LCASE_EXT : 0));
			} else {
				p->need_lfn = (bc & CASE_LOWER) || (ec & CASE_LOWER);
			}
			if (p->name[0] == 0xE5)
				p->name[0] = 0x05; /* 0xE5 first would mark the entry deleted */
			return;
		}
		memset(p->name, ' ', 11);
	}

	/* The basis name of the Microsoft specification: upper case, OEM, spaces dropped,
	 * leading dots dropped, up to 8 characters before the first dot, up to 3 after the last. */
	bool lossy = false;
	size_t start = 0;
	while (start < n && (folded[start] == '.' || folded[start] == ' '))
		start++;
	size_t last_dot = n;
	for (size_t i = n; i > start; i--)
		if (folded[i - 1] == '.') {
			last_dot = i - 1;
			break;
		}
	unsigned k = 0;
	for (size_t i = start; i < n && k < 8 && folded[i] != '.'; i++) {
		if (folded[i] == ' ')
			continue;
		if (is_low(folded[i]))
			continue; /* the second half of a pair already became one '_' */
		p->name[k++] = to_sfn_byte(cp, folded[i], &lossy);
	}
	if (k == 0)
		p->name[k++] = '_';
	unsigned e = 0;
	for (size_t i = last_dot + 1; last_dot < n && i < n && e < 3; i++) {
		if (folded[i] == ' ' || is_low(folded[i]))
			continue;
		p->name[8 + e++] = to_sfn_byte(cp, folded[i], &lossy);
	}
	if (p->name[0] == 0xE5)
		p->name[0] = 0x05;
	p->base_len = k;
	p->need_lfn = true;
	p->need_tail = true;
}

void fat_sfn_tail(const struct fat_sfn_plan *p, unsigned k, uint8_t out[11])
{
	char tail[12];
	int tl = snprintf(tail, sizeof tail, "~%u", k);
	memcpy(out, p->name, 11);
	unsigned base = p->base_len;
	if (base + (unsigned)tl > 8)
		base = 8 - (unsigned)tl;
	/* do not split a character: in single-byte code pages every byte is one */
	memcpy(out + base, tail, (size_t)tl);
	for (unsigned i = base + (unsigned)tl; i < 8; i++)
		out[i] = ' ';
}

bool fat_sfn_of_query(const struct fat_codepage *cp, const uint16_t *u, size_t n,
		      uint8_t out[11])
{
	size_t dot;
	if (n > 12 || !fits_8_3(u, n, &dot))
		return false;
	uint16_t folded[12];
	fat_name_fold(u, n, folded);
	bool lossy = false;
	memset(out, ' ', 11);
	for (size_t i = 0; i < dot; i++)
		out[i] = to_sfn_byte(cp, folded[i], &lossy);
	for (size_t i = dot + 1; i < n; i++)
		out[8 + i - dot - 1] = to_sfn_byte(cp, folded[i], &lossy);
	if (out[0] == 0xE5)
		out[0] = 0x05;
	return !lossy;
}

size_t fat_sfn_display(const struct fat_codepage *cp, enum fat_shortname_mode mode,
		       const uint8_t name[11], uint8_t lcase, uint16_t *out)
{
	size_t bl = 8, el = 3, n = 0;
	while (bl && name[bl - 1] == ' ')
		bl--;
	while (el && name[8 + el - 1] == ' ')
		el--;
	bool lower_base = mode == FAT_SN_LOWER ||
			  ((mode == FAT_SN_MIXED || mode == FAT_SN_WINNT) && (lcase & FAT_LCASE_BASE));
	bool lower_ext = mode == FAT_SN_LOWER ||
			 ((mode == FAT_SN_MIXED || mode == FAT_SN_WINNT) && (lcase & FAT_LCASE_EXT));
	for (size_t i = 0; i < bl; i++) {
		uint8_t b = i == 0 && name[0] == 0x05 ? 0xE5 : name[i];
		uint16_t c = cp->to_unicode[b] ? cp->to_unicode[b] : '_';
		out[n++] = lower_base ? (uint16_t)cp_lower(c) : c;
	}
	if (el) {
		out[n++] = '.';
		for (size_t i = 0; i < el; i++) {
			uint16_t c = cp->to_unicode[name[8 + i]] ? cp->to_unicode[name[8 + i]] : '_';
			out[n++] = lower_ext ? (uint16_t)cp_lower(c) : c;
		}
	}
	if (mode == FAT_SN_WIN95)
		for (size_t i = 0; i < n; i++)
			out[i] = (uint16_t)cp_upper(out[i]);
	return n;
}

uint8_t fat_lfn_checksum(const uint8_t name[11])
{
	uint8_t sum = 0;
	for (int i = 0; i < 11; i++)
		sum = (uint8_t)(((sum & 1) << 7) + (sum >> 1) + name[i]);
	return sum;
}

/* Where the 13 characters sit in an LFN entry. */
static const uint8_t lfn_offsets[FAT_LFN_CHARS] = { 1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30 };

void fat_lfn_pack(uint8_t e[32], const uint16_t *u, size_t n, unsigned ord, uint8_t checksum)
{
	memset(e, 0, 32);
	unsigned last = fat_lfn_slots(n);
	e[0] = (uint8_t)(ord | (ord == last ? 0x40 : 0));
	e[11] = 0x0F;
	e[13] = checksum;
	size_t base = (size_t)(ord - 1) * FAT_LFN_CHARS;
	for (unsigned i = 0; i < FAT_LFN_CHARS; i++) {
		size_t at = base + i;
		uint16_t c = at < n ? u[at] : at == n ? 0x0000 : 0xFFFF;
		put_le16(e + lfn_offsets[i], c);
	}
}

void fat_lfn_unpack(const uint8_t e[32], uint16_t out[FAT_LFN_CHARS])
{
	for (unsigned i = 0; i < FAT_LFN_CHARS; i++)
		out[i] = le16(e + lfn_offsets[i]);
}
