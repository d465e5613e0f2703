/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dlfcn.h>
#include <stddef.h>

#include "config.h"
#include "curl-util.h"

#define LIBCURL_SONAME "libcurl.so.4"

CurlFunctions curl;

const char *curl_try_load(void)
{
        static const struct {
                const char *name;
                size_t offset;
        } syms[] = {
                {"curl_global_init", offsetof(CurlFunctions, global_init)},
                {"curl_easy_init", offsetof(CurlFunctions, easy_init)},
                {"curl_easy_setopt", offsetof(CurlFunctions, easy_setopt)},
                {"curl_easy_perform", offsetof(CurlFunctions, easy_perform)},
                {"curl_easy_getinfo", offsetof(CurlFunctions, easy_getinfo)},
                {"curl_easy_cleanup", offsetof(CurlFunctions, easy_cleanup)},
                {"curl_easy_strerror", offsetof(CurlFunctions, easy_strerror)},
                {"curl_slist_append", offsetof(CurlFunctions, slist_append)},
                {"curl_slist_free_all", offsetof(CurlFunctions, slist_free_all)},
                {"curl_easy_escape", offsetof(CurlFunctions, easy_escape)},
                {"curl_free", offsetof(CurlFunctions, free)},
                {"curl_getdate", offsetof(CurlFunctions, getdate)},
        };
        static char error[256];
        static bool loaded = false;
        void *h;

        if (loaded)
                return NULL;
        h = dlopen(LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
                snprintf(error, sizeof error, "cannot load %s: %s", LIBCURL_SONAME, dlerror());
                return error;
        }
        for (size_t i = 0; i < ELEMENTSOF(syms); i++) {
                void *f = dlsym(h, syms[i].name);
                if (!f) {
                        snprintf(error, sizeof error, "%s lacks %s", LIBCURL_SONAME, syms[i].name);
                        return error;
                }
                memcpy((char *) &curl + syms[i].offset, &f, sizeof f);
        }
        if (curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return "cannot set up libcurl";
        loaded = true;
        return NULL;
}

int curl_load(JobChild *c, const char *needed_by)
{
        const char *e = curl_try_load();

        if (e)
                return job_child_fail(c, ENOPKG, "Cannot use libcurl, which %s need: %s", needed_by, e);
        return 0;
}

CURL *curl_request_new(const char *url, char *errbuf, curl_write_callback on_write, curl_xferinfo_callback on_progress,
                       void *userdata)
{
        CURL *e = curl.easy_init();

        if (!e)
                return NULL;
        (void) curl.easy_setopt(e, CURLOPT_URL, url);
        (void) curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        (void) curl.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        (void) curl.easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 30L);
        /* A stalled server fails the job instead of holding it forever. */
        (void) curl.easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        (void) curl.easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 60L);
        (void) curl.easy_setopt(e, CURLOPT_USERAGENT, "stampd/" PACKAGE_VERSION);
        (void) curl.easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
        (void) curl.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
        (void) curl.easy_setopt(e, CURLOPT_WRITEDATA, userdata);
        if (on_progress) {
                (void) curl.easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
                (void) curl.easy_setopt(e, CURLOPT_XFERINFODATA, userdata);
                (void) curl.easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
        }
        return e;
}
