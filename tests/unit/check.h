/* A minimal test harness for the C unit tests: CHECK() records a failure with file and line and
 * goes on; RUN() runs one test function; the exit status is what meson test reads. Written here
 * rather than pulling in a framework because twenty lines cover everything the tests need. */
#ifndef VIEWOS_CHECK_H
#define VIEWOS_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		check_count++;                                                                     \
		if (!(cond)) {                                                                     \
			check_failures++;                                                          \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
		}                                                                                  \
	} while (0)

#define CHECK_EQ(a, b)                                                                             \
	do {                                                                                       \
		long long va_ = (long long)(a), vb_ = (long long)(b);                              \
		check_count++;                                                                     \
		if (va_ != vb_) {                                                                  \
			check_failures++;                                                          \
			fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n",        \
				__FILE__, __LINE__, #a, va_, #b, vb_);                             \
		}                                                                                  \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *sa_ = (a), *sb_ = (b);                                                 \
		check_count++;                                                                     \
		if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                       \
			check_failures++;                                                          \
			fprintf(stderr, "%s:%d: CHECK_STR failed: '%s' != '%s'\n", __FILE__,       \
				__LINE__, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");             \
		}                                                                                  \
	} while (0)

#define RUN(test)                                                                                  \
	do {                                                                                       \
		int before_ = check_failures;                                                      \
		test();                                                                            \
		printf("%s %s\n", check_failures == before_ ? "ok  " : "FAIL", #test);             \
	} while (0)

#define CHECK_DONE()                                                                               \
	(printf("%d checks, %d failed\n", check_count, check_failures), check_failures ? 1 : 0)

#endif
