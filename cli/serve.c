/* `phaseid serve --models DIR`: the inference HTTP service (server/server.h,
 * docs/http-api.md). Parses the options, starts the server, waits for
 * SIGTERM/SIGINT in the main thread (blocked in every other thread), drains
 * and exits 0. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/h5.h"
#include "core/log.h"
#include "server/server.h"

#define PROG "phaseid serve"

static void serve_usage(FILE *f)
{
    fprintf(f, "usage: phaseid serve --models DIR [options]\n"
               "\n"
               "Serve every model file DIR/*.h5 (named by its stem) over HTTP: the KServe v2 /\n"
               "Triton protocol (JSON and binary tensors), POST /v1/models/NAME/classify (.xy\n"
               "text), streams (POST /v1/models/NAME/stream), live events (GET /v1/events),\n"
               "Prometheus metrics (GET /metrics) and the dashboard (GET /). Frames from all\n"
               "connections are batched per model. See docs/http-api.md.\n"
               "\n"
               "options:\n"
               "  --models DIR              model repository (required)\n"
               "  --host ADDR               address to bind (default 127.0.0.1); any other\n"
               "                            than loopback needs a bearer token\n"
               "  --port P                  TCP port (default 8000; 0 = any free port, printed)\n"
               "  --device cpu|cuda|auto    inference backend (default auto)\n"
               "  --token-file FILE         bearer token required from clients (else the\n"
               "                            environment variable PHASEID_TOKEN, if set)\n"
               "  --max-batch N             frames per backend call (default 64, 1..4096)\n"
               "  --max-queue-delay-us US   how long a frame may wait for a fuller batch\n"
               "                            (default 500)\n"
               "  --max-queue N             frames queued per model before 503 (default 8192)\n"
               "  --max-body-mb MB          request body limit (default 64)\n"
               "  --max-connections N       open connections (default 256)\n"
               "  --timeout-s S             idle connection timeout and request deadline\n"
               "                            (default 30)\n"
               "  --threads N               HTTP threads (default: CPU count, 2..8)\n"
               "  --no-residual             skip the models' physics residual check (faster;\n"
               "                            the unknown flag then comes from the energy score)\n"
               "  -h, --help                show this help\n"
               "\n"
               "Prints 'phaseid serve: listening on http://ADDR:PORT' once ready. SIGTERM or\n"
               "SIGINT drains: no new connections, accepted requests and streams finished,\n"
               "exit 0. exit status: 0 after a drain, 1 on a start failure, 2 bad arguments.\n");
}

/* Read a token file: its first line, surrounding whitespace removed. */
static char *read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char buf[1024];
    char *line = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!line) return NULL;
    char *p = buf;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        p[--n] = '\0';
    return n ? strdup(p) : NULL;
}

/* Self-pipe for the shutdown signals (see cli_serve). */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(sig_pipe[1], &b, 1) < 0) {
        /* nothing to do in a signal handler */
    }
    errno = saved;
}

int cli_serve(int argc, char **argv)
{
    srv_config cfg;
    srv_config_default(&cfg);
    const char *token_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            serve_usage(stdout);
            return 0;
        }
        if (!strcmp(o, "--no-residual")) {
            cfg.no_residual = 1;
            continue;
        }
        if (i + 1 >= argc)
            return cli_bad_arg(PROG, o, NULL,
                               strncmp(o, "--", 2) ? "unexpected argument" : "needs a value");
        const char *v = argv[++i];
        long long iv = 0;
        if (!strcmp(o, "--models")) {
            cfg.models_dir = v;
        } else if (!strcmp(o, "--host")) {
            cfg.host = v;
        } else if (!strcmp(o, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto"))
                return cli_bad_arg(PROG, o, v, "expected cpu, cuda or auto");
            cfg.device = v;
        } else if (!strcmp(o, "--token-file")) {
            token_file = v;
        } else if (!strcmp(o, "--port")) {
            if (cli_parse_int(v, 0, 65535, &iv))
                return cli_bad_arg(PROG, o, v, "expected 0..65535");
            cfg.port = (int)iv;
        } else if (!strcmp(o, "--max-batch")) {
            if (cli_parse_int(v, 1, 4096, &iv)) return cli_bad_arg(PROG, o, v, "expected 1..4096");
            cfg.max_batch = (int)iv;
        } else if (!strcmp(o, "--max-queue-delay-us")) {
            if (cli_parse_int(v, 0, 10000000, &iv))
                return cli_bad_arg(PROG, o, v, "expected 0..10000000");
            cfg.max_queue_delay_us = (long)iv;
        } else if (!strcmp(o, "--max-queue")) {
            if (cli_parse_int(v, 1, 1 << 24, &iv))
                return cli_bad_arg(PROG, o, v, "expected 1..16777216");
            cfg.max_queue = (int)iv;
        } else if (!strcmp(o, "--max-body-mb")) {
            if (cli_parse_int(v, 1, 4096, &iv)) return cli_bad_arg(PROG, o, v, "expected 1..4096");
            cfg.max_body_bytes = (size_t)iv << 20;
        } else if (!strcmp(o, "--max-connections")) {
            if (cli_parse_int(v, 1, 65536, &iv))
                return cli_bad_arg(PROG, o, v, "expected 1..65536");
            cfg.max_connections = (int)iv;
        } else if (!strcmp(o, "--timeout-s")) {
            if (cli_parse_int(v, 1, 86400, &iv))
                return cli_bad_arg(PROG, o, v, "expected 1..86400");
            cfg.timeout_s = (int)iv;
        } else if (!strcmp(o, "--threads")) {
            if (cli_parse_int(v, 1, 64, &iv)) return cli_bad_arg(PROG, o, v, "expected 1..64");
            cfg.threads = (int)iv;
        } else {
            fprintf(stderr, PROG ": unknown option %s (see --help)\n", o);
            return 2;
        }
    }
    if (!cfg.models_dir) {
        fprintf(stderr, PROG ": --models DIR is required (see --help)\n");
        return 2;
    }
    char *token = NULL;
    if (token_file) {
        if (!(token = read_token(token_file))) {
            fprintf(stderr, PROG ": --token-file %s: cannot read a token (%s)\n", token_file,
                    errno ? strerror(errno) : "empty");
            return 2;
        }
    } else if (getenv("PHASEID_TOKEN") && *getenv("PHASEID_TOKEN")) {
        token = strdup(getenv("PHASEID_TOKEN"));
    }
    cfg.token = token;

    /* SIGINT / SIGTERM: a handler writes the signal number to a pipe that
     * this thread reads. (Blocking them here and calling sigwait is not
     * enough: threads started before main, such as OpenBLAS's pool, do not
     * inherit the mask, and a signal delivered to one of them would kill the
     * process.) */
    if (pipe(sig_pipe) != 0) {
        perror(PROG ": pipe");
        free(token);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pid_h5_quiet();

    srv_server *s = NULL;
    pid_error err;
    pid_error_clear(&err);
    pid_status st = srv_server_start(&s, &cfg, &err);
    if (st) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        free(token);
        return st == PID_ERR_ARG ? 2 : 1;
    }
    const char *host = cfg.host ? cfg.host : "127.0.0.1";
    int v6 = strchr(host, ':') != NULL;
    printf(PROG ": listening on http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "",
           srv_server_port(s));
    fflush(stdout);
    unsigned char sig = 0;
    while (read(sig_pipe[0], &sig, 1) != 1) {
        if (errno != EINTR) {
            sig = SIGTERM;
            break;
        }
    }
    fprintf(stderr, PROG ": %s: draining\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    srv_server_drain(s, (double)cfg.timeout_s + 5.0);
    srv_server_destroy(s);
    free(token);
    fprintf(stderr, PROG ": stopped\n");
    return 0;
}
