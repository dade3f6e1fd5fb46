/* The dashboard's static files (the files of server/web/), compiled into the binary at
 * build time by server/embed.cmake (a placeholder page when server/web/ is
 * empty). */
#ifndef PID_SERVER_WEB_H
#define PID_SERVER_WEB_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *name;         /* file name in server/web/ ("index.html") */
    const char *content_type; /* "text/html; charset=utf-8", ... */
    const unsigned char *data;
    size_t len;
} srv_web_file;

/* The file called `name`, or NULL. */
const srv_web_file *srv_web_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
