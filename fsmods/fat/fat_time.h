/* FAT timestamps: local date and time fields (from 1980 to 2107), with 2-second modification
 * times, date-only access times and creation times in 10 ms units. FAT stores local time, as
 * Windows and mtools write it; utc=true reads and writes UTC instead (-o tz=UTC). */
#ifndef FAT_TIME_H
#define FAT_TIME_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* cs may be NULL (mtime and atime have no centiseconds). Out-of-range times are clamped. */
void fat_time_encode(const struct timespec *ts, bool utc, uint16_t *date, uint16_t *time,
		     uint8_t *cs);
void fat_time_decode(uint16_t date, uint16_t time, uint8_t cs, bool utc, struct timespec *ts);

#endif
