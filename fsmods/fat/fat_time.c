/* See fat_time.h. */
#include "fat_time.h"

#include <string.h>

void fat_time_encode(const struct timespec *ts, bool utc, uint16_t *date, uint16_t *time,
		     uint8_t *cs)
{
	struct tm tm;
	time_t t = ts->tv_sec;
	if (!(utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm)) || tm.tm_year < 80) {
		*date = (1 << 5) | 1; /* 1980-01-01 00:00:00, the earliest FAT time */
		*time = 0;
		if (cs)
			*cs = 0;
		return;
	}
	if (tm.tm_year > 207) {
		*date = (uint16_t)((127 << 9) | (12 << 5) | 31);
		*time = (uint16_t)((23 << 11) | (59 << 5) | 29);
		if (cs)
			*cs = 199;
		return;
	}
	*date = (uint16_t)((tm.tm_year - 80) << 9 | (tm.tm_mon + 1) << 5 | tm.tm_mday);
	*time = (uint16_t)(tm.tm_hour << 11 | tm.tm_min << 5 | tm.tm_sec / 2);
	if (cs) {
		long extra = (tm.tm_sec & 1) * 100 + ts->tv_nsec / 10000000;
		*cs = (uint8_t)(extra > 199 ? 199 : extra);
	}
}

void fat_time_decode(uint16_t date, uint16_t time, uint8_t cs, bool utc, struct timespec *ts)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	int day = date & 31, mon = (date >> 5) & 15;
	int hour = time >> 11, min = (time >> 5) & 63, sec = (time & 31) * 2;
	/* invalid fields (a zero date, month 13, minute 63) are clamped, never rejected */
	tm.tm_year = 80 + (date >> 9);
	tm.tm_mon = (mon < 1 ? 1 : mon > 12 ? 12 : mon) - 1;
	tm.tm_mday = day < 1 ? 1 : day;
	tm.tm_hour = hour > 23 ? 23 : hour;
	tm.tm_min = min > 59 ? 59 : min;
	tm.tm_sec = sec > 58 ? 58 : sec;
	tm.tm_isdst = -1;
	if (cs > 199)
		cs = 199;
	/* The fields as if they were UTC, then shifted by the local offset of that moment.
	 * Not mktime(): it runs tzset(), which stats /etc/localtime on every call, three times
	 * for every file's attributes. localtime_r reads the zone once. */
	time_t t = timegm(&tm);
	if (!utc) {
		struct tm lt;
		long off = localtime_r(&t, &lt) ? lt.tm_gmtoff : 0;
		time_t guess = t - off;
		/* near a DST change the offset at the guess may differ: take that one */
		if (localtime_r(&guess, &lt) && lt.tm_gmtoff != off)
			guess = t - lt.tm_gmtoff;
		t = guess;
	}
	ts->tv_sec = t + cs / 100;
	ts->tv_nsec = (long)(cs % 100) * 10000000;
}
