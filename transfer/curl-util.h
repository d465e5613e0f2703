/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <curl/curl.h>

#include "job-child.h"

/* libcurl, dlopen()ed by the jobs that talk HTTP (pulls, registries) alone: linked, it and the
 * thirty-odd libraries it brings would cost every export and import some 4 ms of dynamic linking for
 * nothing. Its functions are called through this table once curl_load() filled it. */
typedef struct CurlFunctions {
        CURLcode (*global_init)(long flags);
        CURL *(*easy_init)(void);
        CURLcode (*easy_setopt)(CURL *e, CURLoption option, ...);
        CURLcode (*easy_perform)(CURL *e);
        CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
        void (*easy_cleanup)(CURL *e);
        const char *(*easy_strerror)(CURLcode code);
        struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
        void (*slist_free_all)(struct curl_slist *l);
        char *(*easy_escape)(CURL *e, const char *s, int n);
        void (*free)(void *p);
        time_t (*getdate)(const char *date, const time_t *unused);
} CurlFunctions;

extern CurlFunctions curl;

/* Loads libcurl and initializes it, once a process: NULL, or what went wrong (a static string), for a
 * job that can do without it. */
const char *curl_try_load(void);
/* Loads libcurl and initializes it, once a process. @needed_by names who needs it in the message
 * if it is missing ("pulls"). 0, or a negative errno after job_child_fail() said why. */
int curl_load(JobChild *c, const char *needed_by);

/* A transfer of @url over http or https as both pulls and registries make it: no signals, a
 * connection within 30 s, failing when stalled for a minute, libcurl's messages in @errbuf (of
 * CURL_ERROR_SIZE), the body to @on_write and progress to @on_progress (if not NULL), both with @userdata. NULL
 * if out of memory. */
CURL *curl_request_new(const char *url, char *errbuf, curl_write_callback on_write, curl_xferinfo_callback on_progress,
                       void *userdata);

static inline void curl_easy_cleanupp(CURL **e)
{
        if (*e)
                curl.easy_cleanup(*e);
}
