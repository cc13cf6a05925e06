"""Client encodings other than UTF-8: query text and results are bytes in the client's
encoding (PostgreSQL converts at the boundary). Each encoding's sample has characters whose
trailing byte is an ASCII quote or backslash where the encoding allows it (SJIS, BIG5), inside
plain and E'' literals, which a byte scanner that assumes UTF-8 or ASCII gets wrong."""

from transcript import Client, emit, main, pq_result

# (PostgreSQL name, Python codec, sample text). Every sample is representable in its encoding.
SAMPLES = [
    ("LATIN1", "latin-1", "caf\u00e9 \u00f1 \u00fc \u00bfqu\u00e9?"),
    ("LATIN2", "iso8859-2", "\u017elu\u0165ou\u010dk\u00fd k\u016f\u0148"),
    ("LATIN9", "iso8859-15", "\u20ac \u0153uvre \u0161"),
    ("WIN1250", "cp1250", "\u0141\u00f3d\u017a \u201ea\u201d"),
    ("WIN1251", "cp1251", "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440"),
    ("WIN1252", "cp1252", "\u20ac caf\u00e9 \u201cquotes\u201d \u2026"),
    ("KOI8R", "koi8-r", "\u041f\u0440\u0438\u0432\u0435\u0442"),
    ("SJIS", "shift_jis", "\u65e5\u672c\u8a9e \u30bd\u8868\u80fd \u5341"),
    ("EUC_JP", "euc_jp", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8"),
    ("EUC_KR", "euc_kr", "\ud55c\uad6d\uc5b4"),
    ("GBK", "gbk", "\u4e2d\u6587\u6587\u672c"),
    ("BIG5", "big5", "\u4e2d\u6587 \u8a31\u529f\u84cb"),
    ("UHC", "cp949", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8"),
]


def run_encoding(pg_name, codec, text):
    c = Client(pg_name)
    c.query("set", f"SET client_encoding TO '{pg_name}'")
    raw = text.encode(codec)
    emit(ev="sample", who=pg_name, hex=raw.hex())

    def exact(sql_bytes):
        # psycopg.pq: the query is sent as these bytes; the result's bytes come back as they are.
        def run(conn):
            return pq_result(conn.pgconn.exec_(sql_bytes))

        return run

    c.step("literal", exact(b"SELECT '" + raw + b"' AS v, length('" + raw + b"')"))
    c.step("E literal", exact(b"SELECT E'" + raw + b"', E'" + raw + b"\\\\'"))
    c.step("dollar quoted", exact(b"SELECT $q$" + raw + b"$q$"))
    c.step("identifier", exact(b'SELECT 1 AS "' + raw + b'"'))
    c.step("as utf-8 hex", exact(b"SELECT encode(convert_to('" + raw + b"', 'UTF8'), 'hex')"))
    c.step("parameter", lambda conn: pq_result(conn.pgconn.exec_params(b"SELECT $1::text || '!'", [raw])))
    c.step("two statements", exact(b"SELECT '" + raw + b"'; SELECT 'second'"))
    c.step("error text", exact(b"SELECT '" + raw + b"'::int"))
    c.query("driver round trip", "SELECT %s::text, length(%s::text)", [text, text])
    c.query("back to utf8", "SET client_encoding TO 'UTF8'")
    c.query("after", "SHOW client_encoding")
    c.close()


def all_encodings():
    for pg_name, codec, text in SAMPLES:
        run_encoding(pg_name, codec, text)


if __name__ == "__main__":
    main({"all_encodings": all_encodings})
