/* validate_published.h: the --published mode of usp validate. */
#ifndef USP_VALIDATE_PUBLISHED_H
#define USP_VALIDATE_PUBLISHED_H

/* The directory --published reads when it names none. */
#define USP_PUBLISHED_DEFAULT_DIR "traces/published"

/* argv with "--published DIR" joined into "--published=DIR" (getopt's
 * optional arguments take only the joined form), NULL-terminated, its count
 * in *joined_argc; NULL when out of memory. Free with usp_validate_free_joined. */
char **usp_validate_join_published(int argc, char **argv, int *joined_argc);
void usp_validate_free_joined(char **argv);

/* Re-predicts and prints every table of dir; profile/platform (may be NULL)
 * replace the tables' own. Returns the exit code. */
int usp_validate_published(const char *dir, const char *profile, const char *platform, int json, int quiet);

#endif
