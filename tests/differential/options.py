"""Startup settings (the startup packet's `options` with -c, and libpq's PGDATESTYLE / PGTZ,
which it sends as startup parameters) are what RESET, RESET ALL and DISCARD ALL go back to,
as on PostgreSQL; and they stay with their client: the next client on the same backend sees
the server's defaults. (The clients run one after the other: the first may pin its backend,
which with pool_size 1 would make a second one wait.)"""

import os

from transcript import Client, main

SHOW = "SELECT current_setting('DateStyle'), current_setting('search_path'), " \
    "current_setting('TimeZone'), current_setting('application_name'), " \
    "current_setting('IntervalStyle'), current_setting('extra_float_digits')"

OPTIONS = (
    "-c DateStyle=Postgres,MDY -c search_path=app_schema,public -c TimeZone=America/New_York "
    "-c IntervalStyle=sql_standard -c extra_float_digits=1"
)


def resets(c):
    c.query("startup values", SHOW)
    c.query("date in startup style", "SELECT date '2024-03-05'::text, interval '1 day 2 hours'::text, timestamptz '2024-03-05 12:00+00'::text")
    c.query("set", "SET DateStyle = 'German'; SET TimeZone = 'Asia/Tokyo'; SET search_path = pg_catalog")
    c.query("after set", SHOW)
    c.query("reset DateStyle", "RESET DateStyle")
    c.query("reset TimeZone", "RESET TimeZone")
    c.query("after single resets", SHOW)
    c.query("set again", "SET DateStyle = 'SQL, DMY'; SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'")
    c.query("reset all", "RESET ALL")
    c.query("after reset all", SHOW)
    c.query("set once more", "SET DateStyle = 'German'; SET application_name = 'changed'")
    c.query("discard all", "DISCARD ALL")
    c.query("after discard all", SHOW)
    c.query("set local in a transaction", "BEGIN; SET LOCAL TimeZone = 'UTC'; SELECT current_setting('TimeZone'); COMMIT")
    c.query("after the transaction", SHOW)


def startup_options_then_reset():
    a = Client("a", options=OPTIONS, application_name="startup-app")
    resets(a)
    a.close()
    b = Client("b")
    b.query("next client sees the defaults", SHOW)
    b.query("next client resets", "RESET ALL")
    b.query("next client after reset all", SHOW)
    b.close()


def libpq_environment_then_reset():
    # libpq turns PGDATESTYLE and PGTZ into the startup parameters datestyle and timezone.
    os.environ["PGDATESTYLE"] = "SQL, DMY"
    os.environ["PGTZ"] = "Europe/Paris"
    a = Client("a")
    del os.environ["PGDATESTYLE"]
    del os.environ["PGTZ"]
    resets(a)
    a.close()
    b = Client("b")
    b.query("next client sees the defaults", SHOW)
    b.close()


if __name__ == "__main__":
    main(
        {
            "startup_options_then_reset": startup_options_then_reset,
            "libpq_environment_then_reset": libpq_environment_then_reset,
        }
    )
