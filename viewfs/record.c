/* See record.h. The format is docs/viewfs-layer-format.md; this file is its only reader and
 * writer. Records come from a directory the user controls and may be edited by hand, so the
 * parser trusts nothing: every value is range-checked and anything it cannot read exactly is
 * reported as corrupt rather than guessed. */
#define _GNU_SOURCE
#include "record.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Decimal or octal digits only (no sign, no spaces, no 0x), value <= max. */
static bool parse_unsigned(const char *s, size_t len, int base, uint64_t max, uint64_t *out)
{
	if (len == 0 || len > 22)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (d >= (unsigned)base)
			return false;
		if (v > (max - d) / (uint64_t)base)
			return false;
		v = v * (uint64_t)base + d;
	}
	*out = v;
	return true;
}

/* "A,B" with both parts decimal. */
static bool parse_pair(const char *s, size_t len, uint64_t maxa, uint64_t maxb, uint64_t *a,
		       uint64_t *b)
{
	const char *comma = memchr(s, ',', len);
	if (!comma)
		return false;
	size_t la = (size_t)(comma - s);
	return parse_unsigned(s, la, 10, maxa, a) &&
	       parse_unsigned(comma + 1, len - la - 1, 10, maxb, b);
}

static mode_t type_from_letter(char c)
{
	switch (c) {
	case 'f': case '-': return S_IFREG;
	case 'c': return S_IFCHR;
	case 'b': return S_IFBLK;
	case 'p': return S_IFIFO;
	case 's': return S_IFSOCK;
	default: return 0;
	}
}

static char letter_from_type(mode_t t)
{
	switch (t & S_IFMT) {
	case S_IFCHR: return 'c';
	case S_IFBLK: return 'b';
	case S_IFIFO: return 'p';
	case S_IFSOCK: return 's';
	default: return 'f';
	}
}

char *vrecord_unescape(const char *s, size_t len)
{
	char *out = malloc(len + 1), *d = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '\\') {
			*d++ = s[i];
			continue;
		}
		if (i + 1 < len && s[i + 1] == '\\') {
			*d++ = '\\';
			i++;
		} else if (i + 1 < len && s[i + 1] == 'n') {
			*d++ = '\n';
			i++;
		} else if (i + 3 < len && memcmp(s + i + 1, "x7f", 3) == 0) {
			*d++ = '\x7f';
			i += 3;
		} else {
			free(out);
			return NULL;
		}
	}
	*d = '\0';
	return out;
}

/* Unescape a redirect value (\\, \n, \x7f) and check it is an absolute path without empty,
 * "." or ".." components. Returns a malloc'ed string or NULL (corrupt or ENOMEM). */
char *vrecord_parse_path(const char *s, size_t len)
{
	char *out = vrecord_unescape(s, len);
	if (!out)
		return NULL;
	size_t n = strlen(out);
	bool ok = n >= 2 && out[0] == '/' && !memchr(s, '\0', len);
	for (const char *c = out; ok && *c;) {
		/* c points at a '/' */
		const char *next = strchr(c + 1, '/');
		size_t clen = next ? (size_t)(next - c - 1) : strlen(c + 1);
		if (clen == 0 || (clen == 1 && c[1] == '.') || (clen == 2 && c[1] == '.' && c[2] == '.'))
			ok = false;
		if (clen > 255)
			ok = false;
		c = next ? next : c + 1 + clen;
	}
	if (!ok) {
		free(out);
		return NULL;
	}
	return out;
}

bool vrecord_key_ok(const char *key, size_t len)
{
	if (len == 0 || len > VREC_KEY_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'z')))
			return false;
	return true;
}

static int append_extra(struct vrecord *rec, const char *line, size_t len)
{
	size_t old = rec->extra ? strlen(rec->extra) : 0;
	char *e = realloc(rec->extra, old + len + 2);
	if (!e)
		return -1;
	memcpy(e + old, line, len);
	e[old + len] = '\n';
	e[old + len + 1] = '\0';
	rec->extra = e;
	return 0;
}

static bool key_is(const char *key, size_t klen, const char *name)
{
	return strlen(name) == klen && memcmp(key, name, klen) == 0;
}

static int parse_line(struct vrecord *rec, const char *line, size_t len, unsigned lineno,
		      char *err, size_t errlen)
{
	const char *eq = memchr(line, '=', len);
	if (!eq)
		return fail(err, errlen, "line %u: no '='", lineno);
	const char *key = line, *val = eq + 1;
	size_t klen = (size_t)(eq - line), vlen = len - klen - 1;
	uint64_t a, b;

	if (klen == 0)
		return fail(err, errlen, "line %u: empty key", lineno);
	for (size_t i = 0; i < klen; i++) {
		char c = key[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return fail(err, errlen, "line %u: bad key", lineno);
	}

	if (key_is(key, klen, "type")) {
		mode_t t = vlen == 1 ? type_from_letter(val[0]) : 0;
		if (!t)
			return fail(err, errlen, "line %u: bad type", lineno);
		rec->type = t;
		rec->has |= VREC_TYPE;
	} else if (key_is(key, klen, "mode")) {
		if (!parse_unsigned(val, vlen, 8, 07777, &a))
			return fail(err, errlen, "line %u: bad mode", lineno);
		rec->mode = (mode_t)a;
		rec->has |= VREC_MODE;
	} else if (key_is(key, klen, "uid") || key_is(key, klen, "gid")) {
		/* (uid_t)-1 means "no change" to chown(2): never a real owner */
		if (!parse_unsigned(val, vlen, 10, UINT32_MAX - 1, &a))
			return fail(err, errlen, "line %u: bad %.3s", lineno, key);
		if (key[0] == 'u') {
			rec->uid = (uid_t)a;
			rec->has |= VREC_UID;
		} else {
			rec->gid = (gid_t)a;
			rec->has |= VREC_GID;
		}
	} else if (key_is(key, klen, "rdev")) {
		if (!parse_pair(val, vlen, UINT32_MAX, UINT32_MAX, &a, &b))
			return fail(err, errlen, "line %u: bad rdev", lineno);
		rec->rdev = makedev((unsigned)a, (unsigned)b);
		rec->has |= VREC_RDEV;
	} else if (key_is(key, klen, "ctime")) {
		if (!parse_pair(val, vlen, INT64_MAX, 999999999, &a, &b))
			return fail(err, errlen, "line %u: bad ctime", lineno);
		rec->ctime.tv_sec = (time_t)a;
		rec->ctime.tv_nsec = (long)b;
		rec->has |= VREC_CTIME;
	} else if (key_is(key, klen, "ino")) {
		if (!parse_unsigned(val, vlen, 10, UINT64_MAX, &a) || a == 0)
			return fail(err, errlen, "line %u: bad ino", lineno);
		rec->ino = a;
		rec->has |= VREC_INO;
	} else if (key_is(key, klen, "opaque")) {
		if (vlen != 1 || (val[0] != '0' && val[0] != '1'))
			return fail(err, errlen, "line %u: bad opaque", lineno);
		if (val[0] == '1')
			rec->has |= VREC_OPAQUE;
		else
			rec->has &= ~(unsigned)VREC_OPAQUE;
	} else if (key_is(key, klen, "redirect")) {
		char *r = vrecord_parse_path(val, vlen);
		if (!r)
			return fail(err, errlen, "line %u: bad redirect", lineno);
		free(rec->redirect);
		rec->redirect = r;
		rec->has |= VREC_REDIRECT;
	} else if (key_is(key, klen, "link")) {
		if (!vrecord_key_ok(val, vlen))
			return fail(err, errlen, "line %u: bad link", lineno);
		char *k = strndup(val, vlen);
		if (!k)
			return fail(err, errlen, "out of memory");
		free(rec->link);
		rec->link = k;
		rec->has |= VREC_LINK;
	} else if (key_is(key, klen, "nlink")) {
		if (!parse_unsigned(val, vlen, 10, UINT32_MAX, &a))
			return fail(err, errlen, "line %u: bad nlink", lineno);
		rec->nlink = a;
		rec->has |= VREC_NLINK;
	} else {
		if (append_extra(rec, line, len) < 0)
			return fail(err, errlen, "out of memory");
	}
	return 0;
}

int vrecord_parse(const char *buf, size_t len, struct vrecord *rec, char *err, size_t errlen)
{
	memset(rec, 0, sizeof *rec);
	if (len > VREC_MAX_SIZE)
		return fail(err, errlen, "larger than %d bytes", VREC_MAX_SIZE);
	if (memchr(buf, '\0', len)) {
		return fail(err, errlen, "contains a NUL byte");
	}
	unsigned lineno = 0;
	size_t pos = 0;
	while (pos < len) {
		const char *line = buf + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t llen = nl ? (size_t)(nl - line) : len - pos;
		pos += llen + (nl ? 1 : 0);
		lineno++;
		if (llen == 0)
			continue;
		if (parse_line(rec, line, llen, lineno, err, errlen) < 0) {
			vrecord_clear(rec);
			return -1;
		}
	}
	return 0;
}

/* A growing string: formatting a record never needs more than a few hundred bytes plus the
 * redirect and extra lines. */
struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_add(struct sbuf *sb, const char *fmt, ...)
{
	if (sb->oom)
		return;
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		sb->oom = true;
		return;
	}
	if (sb->len + (size_t)n + 1 > sb->cap) {
		size_t cap = (sb->len + (size_t)n + 1) * 2;
		char *p = realloc(sb->p, cap);
		if (!p) {
			free(s);
			sb->oom = true;
			return;
		}
		sb->p = p;
		sb->cap = cap;
	}
	memcpy(sb->p + sb->len, s, (size_t)n + 1);
	sb->len += (size_t)n;
	free(s);
}

static void sb_add_escaped(struct sbuf *sb, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			sb_add(sb, "\\\\");
		else if (*s == '\n')
			sb_add(sb, "\\n");
		else if (*s == '\x7f')
			sb_add(sb, "\\x7f");
		else
			sb_add(sb, "%c", *s);
	}
}

char *vrecord_format(const struct vrecord *rec, size_t *len)
{
	struct sbuf sb = { 0 };
	sb_add(&sb, "%s", "");
	if (rec->has & VREC_TYPE)
		sb_add(&sb, "type=%c\n", letter_from_type(rec->type));
	if (rec->has & VREC_MODE)
		sb_add(&sb, "mode=0%o\n", (unsigned)(rec->mode & 07777));
	if (rec->has & VREC_UID)
		sb_add(&sb, "uid=%u\n", (unsigned)rec->uid);
	if (rec->has & VREC_GID)
		sb_add(&sb, "gid=%u\n", (unsigned)rec->gid);
	if (rec->has & VREC_RDEV)
		sb_add(&sb, "rdev=%u,%u\n", major(rec->rdev), minor(rec->rdev));
	if (rec->has & VREC_CTIME)
		sb_add(&sb, "ctime=%" PRId64 ",%ld\n", (int64_t)rec->ctime.tv_sec,
		       rec->ctime.tv_nsec);
	if (rec->has & VREC_INO)
		sb_add(&sb, "ino=%" PRIu64 "\n", rec->ino);
	if (rec->has & VREC_OPAQUE)
		sb_add(&sb, "opaque=1\n");
	if ((rec->has & VREC_REDIRECT) && rec->redirect) {
		sb_add(&sb, "redirect=");
		sb_add_escaped(&sb, rec->redirect);
		sb_add(&sb, "\n");
	}
	if (rec->has & VREC_NLINK)
		sb_add(&sb, "nlink=%" PRIu64 "\n", rec->nlink);
	if ((rec->has & VREC_LINK) && rec->link)
		sb_add(&sb, "link=%s\n", rec->link);
	if (rec->extra)
		sb_add(&sb, "%s", rec->extra);
	if (sb.oom) {
		free(sb.p);
		return NULL;
	}
	*len = sb.len;
	return sb.p;
}

bool vrecord_empty(const struct vrecord *rec)
{
	return rec->has == 0 && (!rec->extra || !*rec->extra);
}

void vrecord_clear(struct vrecord *rec)
{
	free(rec->link);
	free(rec->redirect);
	free(rec->extra);
	memset(rec, 0, sizeof *rec);
}

int vrecord_copy(struct vrecord *dst, const struct vrecord *src)
{
	*dst = *src;
	dst->redirect = src->redirect ? strdup(src->redirect) : NULL;
	dst->extra = src->extra ? strdup(src->extra) : NULL;
	dst->link = src->link ? strdup(src->link) : NULL;
	if ((src->redirect && !dst->redirect) || (src->extra && !dst->extra) ||
	    (src->link && !dst->link)) {
		vrecord_clear(dst);
		return -1;
	}
	return 0;
}

void vrecord_set_link(struct vrecord *rec, const char *key)
{
	free(rec->link);
	rec->link = key ? strdup(key) : NULL;
	if (rec->link)
		rec->has |= VREC_LINK;
	else
		rec->has &= ~(unsigned)VREC_LINK;
}

char *vrecord_escape(const char *s)
{
	struct sbuf sb = { 0 };
	sb_add(&sb, "%s", "");
	sb_add_escaped(&sb, s);
	if (sb.oom) {
		free(sb.p);
		return NULL;
	}
	return sb.p;
}

void vrecord_set_redirect(struct vrecord *rec, const char *path)
{
	free(rec->redirect);
	rec->redirect = path ? strdup(path) : NULL;
	if (rec->redirect)
		rec->has |= VREC_REDIRECT;
	else
		rec->has &= ~(unsigned)VREC_REDIRECT;
}
