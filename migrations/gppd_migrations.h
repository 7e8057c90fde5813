/* gppd_migrations.h - the SQL migrations of gppd.db, embedded at build time
 * from migrations/NNNN_name.sql by embed_migrations.py (see meson.build).
 * daemon/store.c applies those newer than the database, in order, in one
 * transaction. */
#ifndef GPPD_MIGRATIONS_H
#define GPPD_MIGRATIONS_H

#include <stddef.h>

struct gppd_migration {
    int version;        /* NNNN: 1, 2, 3, ... */
    const char *name;   /* the name part of the file name */
    const char *sql;    /* the whole file */
};

/* Sorted by version; gppd_migrations[i].version == i + 1. */
extern const struct gppd_migration gppd_migrations[];
extern const size_t gppd_migrations_count;

#endif
