#define _POSIX_C_SOURCE 200809L
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

Status mapped_file_open(MappedFile *mf, const char *path) {
    memset(mf, 0, sizeof *mf);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail(STATUS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(STATUS_ERR_IO, "cannot read '%s': not a regular file", path);
    }
    mf->size = (size_t)st.st_size;
    if (mf->size > 0) {
        void *p = mmap(NULL, mf->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return fail(STATUS_ERR_IO, "cannot map '%s': %s", path, strerror(errno));
        }
        mf->data = p;
    }
    close(fd);
    mf->path = xstrdup(path);
    return STATUS_OK;
}

void mapped_file_close(MappedFile *mf) {
    if (mf->data) munmap((void *)mf->data, mf->size);
    free(mf->path);
    memset(mf, 0, sizeof *mf);
}

Status file_read_all(const char *path, char **out, size_t *size) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fail(STATUS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return fail(STATUS_ERR_IO, "cannot read '%s'", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (size) *size = n;
    return STATUS_OK;
}

// Creates the directory part of `path` when it is missing (outputs like out/r.json).
static Status ensure_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return STATUS_OK;
    char *dir = strndup(path, (size_t)(slash - path));
    Status s = path_is_dir(dir) ? STATUS_OK : dir_create(dir);
    free(dir);
    return s;
}

/* Interrupt cleanup: a fixed table the signal handler can walk without locks or
 * allocation (unlink is async-signal-safe). A slot's path is written before it is marked
 * used and the mark is cleared before the path can change. */
enum { TMP_SLOTS = 64 };
static char tmp_slot_path[TMP_SLOTS][PATH_MAX];
static volatile sig_atomic_t tmp_slot_used[TMP_SLOTS];
static pthread_mutex_t tmp_slot_lock = PTHREAD_MUTEX_INITIALIZER;

static int tmp_slot_add(const char *path) {
    if (strlen(path) >= PATH_MAX) return 0;
    pthread_mutex_lock(&tmp_slot_lock);
    int slot = 0;
    for (int i = 0; i < TMP_SLOTS && !slot; i++)
        if (!tmp_slot_used[i]) {
            memcpy(tmp_slot_path[i], path, strlen(path) + 1);
            tmp_slot_used[i] = 1;
            slot = i + 1;
        }
    pthread_mutex_unlock(&tmp_slot_lock);
    return slot;
}

static void tmp_slot_remove(int slot) {
    if (slot <= 0) return;
    pthread_mutex_lock(&tmp_slot_lock);
    tmp_slot_used[slot - 1] = 0;
    pthread_mutex_unlock(&tmp_slot_lock);
}

static void on_fatal_signal(int sig) {
    for (int i = 0; i < TMP_SLOTS; i++)
        if (tmp_slot_used[i]) unlink(tmp_slot_path[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

void atomic_file_cleanup_on_signals(void) {
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

Status atomic_file_open(AtomicFile *af, const char *path) {
    memset(af, 0, sizeof *af);
    Status ps = ensure_parent_dir(path);
    if (ps != STATUS_OK) return ps;
    size_t n = strlen(path) + 32;
    af->tmp_path = xmalloc(n);
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f) {
        Status s = fail(STATUS_ERR_IO, "cannot create '%s': %s", af->tmp_path, strerror(errno));
        free(af->tmp_path);
        af->tmp_path = NULL;
        return s;
    }
    af->path = xstrdup(path);
    af->slot = tmp_slot_add(af->tmp_path);
    return STATUS_OK;
}

Status atomic_file_commit(AtomicFile *af) {
    Status s = STATUS_OK;
    int bad = ferror(af->f) || fflush(af->f) != 0 || fsync(fileno(af->f)) != 0;
    bad |= fclose(af->f) != 0;
    af->f = NULL;
    if (bad)
        s = fail(STATUS_ERR_IO, "cannot write '%s': %s", af->path, strerror(errno));
    else if (rename(af->tmp_path, af->path) != 0)
        s = fail(STATUS_ERR_IO, "cannot rename '%s' to '%s': %s", af->tmp_path, af->path,
                 strerror(errno));
    if (s != STATUS_OK) unlink(af->tmp_path);
    tmp_slot_remove(af->slot);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
    return s;
}

void atomic_file_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    tmp_slot_remove(af->slot);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

Status file_write_all(const char *path, const void *data, size_t size) {
    AtomicFile af;
    Status s = atomic_file_open(&af, path);
    if (s != STATUS_OK) return s;
    if (size && fwrite(data, 1, size, af.f) != size) {
        s = fail(STATUS_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        atomic_file_abort(&af);
        return s;
    }
    return atomic_file_commit(&af);
}

int path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int path_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

Status dir_create(const char *path) {
    char *p = xstrdup(path);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) break;
        *c = '/';
    }
    int ok = mkdir(p, 0755) == 0 || (errno == EEXIST && path_is_dir(p));
    Status s = ok ? STATUS_OK
                  : fail(STATUS_ERR_IO, "cannot create directory '%s': %s", path, strerror(errno));
    free(p);
    return s;
}

char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *out = xmalloc(a + b + 2);
    memcpy(out, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') out[k++] = '/';
    memcpy(out + k, name, b + 1);
    return out;
}

void dir_remove(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char *p = path_join(dir, e->d_name);
            if (unlink(p) != 0) rmdir(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

bool out_dir_taken(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && !(S_ISDIR(sb.st_mode) && dir_is_empty(path));
}

bool dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = false;
    closedir(d);
    return empty;
}
