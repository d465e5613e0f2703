/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <grp.h>
#include <pwd.h>

#include "machine.h"
#include "uid-range.h"

static bool slot_taken(GHashTable *taken, uid_t base)
{
        return g_hash_table_contains(taken, GUINT_TO_POINTER((unsigned) base));
}

static void take_id(GHashTable *taken, unsigned id)
{
        if (id < UID_RANGE_FIRST || id >= UID_RANGE_LAST + UID_RANGE_SIZE)
                return;
        g_hash_table_add(taken, GUINT_TO_POINTER(id - (id - UID_RANGE_FIRST) % UID_RANGE_SIZE));
}

int uid_range_pick(Manager *m, uid_t *ret)
{
        g_autoptr(GHashTable) taken = g_hash_table_new(g_direct_hash, g_direct_equal);
        GHashTableIter it;
        gpointer v;
        struct passwd *pw;
        struct group *gr;

        g_hash_table_iter_init(&it, m->machines);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                Machine *mc = v;
                if (mc->userns)
                        g_hash_table_add(taken, GUINT_TO_POINTER((unsigned) mc->uid_base));
        }
        /* Users and groups that happen to live in the band: their slots are never handed out. */
        setpwent();
        while ((pw = getpwent()))
                take_id(taken, pw->pw_uid);
        endpwent();
        setgrent();
        while ((gr = getgrent()))
                take_id(taken, gr->gr_gid);
        endgrent();

        for (uid_t base = UID_RANGE_FIRST; base <= UID_RANGE_LAST; base += UID_RANGE_SIZE)
                if (!slot_taken(taken, base)) {
                        *ret = base;
                        return 0;
                }
        return -EBUSY;
}
