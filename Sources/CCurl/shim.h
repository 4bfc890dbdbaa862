#ifndef DO_STORAGE_CCURL_SHIM_H
#define DO_STORAGE_CCURL_SHIM_H
#include <curl/curl.h>

/* libcurl's option and info calls are variadic, which Swift cannot call; these typed wrappers can be. */

typedef size_t (*do_curl_write_callback)(char *ptr, size_t size, size_t nmemb, void *userdata);

static inline CURLcode do_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode do_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode do_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode do_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode do_curl_setopt_write_callback(CURL *handle, CURLoption option, do_curl_write_callback value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode do_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode do_curl_getinfo_double(CURL *handle, CURLINFO info, double *value) {
    return curl_easy_getinfo(handle, info, value);
}
#endif
