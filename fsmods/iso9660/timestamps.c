/* ISO 9660 dates to struct timespec (see ondisk.h). Computed by hand rather than with timegm():
 * the fields come from the image and may be anything, and a plain day count is exact, needs no
 * time zone state and cannot fail. */
#include "ondisk.h"

#include <stdbool.h>

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (the usual shift of the year
 * to start in March, so that the leap day is the last day of the year). */
static int64_t days_since_epoch(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t year_of_era = y - era * 400;
	int64_t day_of_year = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
	return era * 146097 + day_of_era - 719468;
}

static struct timespec make_time(int64_t year, unsigned mon, unsigned day, unsigned hour,
				 unsigned min, unsigned sec, long nsec, int8_t gmtoff)
{
	struct timespec ts = { 0, 0 };
	if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
		return ts;
	int64_t t = days_since_epoch(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
	/* The offset is in 15-minute steps, -48 (-12h) to +52 (+13h); others are noise. */
	if (gmtoff >= -48 && gmtoff <= 52)
		t -= (int64_t)gmtoff * 15 * 60;
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = nsec;
	return ts;
}

struct timespec iso_date7(const uint8_t *p)
{
	return make_time(1900 + (int64_t)p[0], p[1], p[2], p[3], p[4], p[5], 0, (int8_t)p[6]);
}

static bool digits(const uint8_t *p, int n, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	*out = v;
	return true;
}

struct timespec iso_date17(const uint8_t *p)
{
	unsigned y, mo, d, h, mi, s, cs;
	struct timespec none = { 0, 0 };
	if (!digits(p, 4, &y) || !digits(p + 4, 2, &mo) || !digits(p + 6, 2, &d) ||
	    !digits(p + 8, 2, &h) || !digits(p + 10, 2, &mi) || !digits(p + 12, 2, &s) ||
	    !digits(p + 14, 2, &cs))
		return none;
	return make_time(y, mo, d, h, mi, s, (long)cs * 10000000L, (int8_t)p[16]);
}
