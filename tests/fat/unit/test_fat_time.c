/* Unit tests of fsmods/fat/fat_time.c: FAT date/time fields both ways, 2-second and 10 ms
 * resolution, clamping to 1980..2107, invalid fields read without harm, local time vs UTC. */
#include "check.h"
#include "fat_time.h"

#include <stdlib.h>

static void test_utc_round_trip(void)
{
	/* 2024-02-29 13:37:43.456 UTC */
	struct timespec ts = { 1709213863, 456000000 }, back;
	uint16_t d, t;
	uint8_t cs;
	fat_time_encode(&ts, true, &d, &t, &cs);
	CHECK_EQ(d >> 9, 2024 - 1980);
	CHECK_EQ((d >> 5) & 15, 2);
	CHECK_EQ(d & 31, 29);
	CHECK_EQ(t >> 11, 13);
	CHECK_EQ((t >> 5) & 63, 37);
	CHECK_EQ((t & 31) * 2, 42); /* 2-second units */
	CHECK_EQ(cs, 145);          /* the odd second and 45 hundredths */
	fat_time_decode(d, t, cs, true, &back);
	CHECK_EQ(back.tv_sec, 1709213863);
	CHECK_EQ(back.tv_nsec, 450000000); /* 10 ms resolution */
	fat_time_decode(d, t, 0, true, &back); /* without centiseconds: the even second */
	CHECK_EQ(back.tv_sec, 1709213862);
	CHECK_EQ(back.tv_nsec, 0);
}

static void test_clamping(void)
{
	struct timespec before = { 0, 0 }, after = { 4500000000LL, 0 }, back;
	uint16_t d, t;
	uint8_t cs;
	fat_time_encode(&before, true, &d, &t, &cs);
	CHECK_EQ(d, (1 << 5) | 1); /* 1980-01-01 */
	CHECK_EQ(t, 0);
	fat_time_decode(d, t, cs, true, &back);
	CHECK_EQ(back.tv_sec, 315532800);
	fat_time_encode(&after, true, &d, &t, &cs);
	CHECK_EQ(d >> 9, 127); /* 2107 */
	CHECK_EQ((d >> 5) & 15, 12);
	CHECK_EQ(d & 31, 31);
	/* invalid fields (month 0, day 0, hour 31, minute 63) read as the nearest valid time */
	fat_time_decode(0, 0xFFFF, 250, true, &back);
	CHECK_EQ(back.tv_sec, 315532800 + 23 * 3600 + 59 * 60 + 58 + 1);
	CHECK_EQ(back.tv_nsec, 990000000);
}

static void test_local_time_follows_the_zone(void)
{
	struct timespec ts = { 1700000000, 0 }, back;
	uint16_t d, t;
	setenv("TZ", "Europe/Rome", 1);
	tzset();
	fat_time_encode(&ts, false, &d, &t, NULL);
	CHECK_EQ(t >> 11, 23); /* 22:13:20 UTC is 23:13:20 in Rome (CET, winter) */
	fat_time_decode(d, t, 0, false, &back);
	CHECK_EQ(back.tv_sec, 1700000000);
	struct timespec summer = { 1690000000, 0 }; /* July: CEST, two hours */
	fat_time_encode(&summer, false, &d, &t, NULL);
	fat_time_decode(d, t, 0, false, &back);
	CHECK_EQ(back.tv_sec, 1690000000);
	setenv("TZ", "UTC", 1);
	tzset();
	fat_time_encode(&ts, false, &d, &t, NULL);
	CHECK_EQ(t >> 11, 22);
}

int main(void)
{
	RUN(test_utc_round_trip);
	RUN(test_clamping);
	RUN(test_local_time_follows_the_zone);
	return CHECK_DONE();
}
