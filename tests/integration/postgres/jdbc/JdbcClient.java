// A small PostgreSQL JDBC (pgjdbc) program run against the gateway by test_jdbc.py.
// Usage: java -cp postgresql.jar:. JdbcClient <jdbc url> <user> <token>
// It prints one "ok <step>" line per step that behaved as expected and exits non-zero
// at the first step that did not.

import java.io.ByteArrayInputStream;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Arrays;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;
import org.postgresql.largeobject.LargeObject;
import org.postgresql.largeobject.LargeObjectManager;

public class JdbcClient {
    static void check(boolean condition, String step) {
        if (!condition) {
            System.out.println("FAILED " + step);
            System.exit(1);
        }
        System.out.println("ok " + step);
    }

    static long one(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        try (Connection conn = DriverManager.getConnection(args[0], args[1], args[2])) {
            check(one(conn, "SELECT 6 * 7") == 42, "query");

            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TEMP TABLE j (id int PRIMARY KEY, name text)");
            }
            // prepareThreshold=1 in the URL: named server-side statements from the first use
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO j VALUES (?, ?)")) {
                for (int i = 0; i < 50; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "n" + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check(counts.length == 50 && Arrays.stream(counts).allMatch(c -> c == 1), "batch");
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT name FROM j WHERE id = ?")) {
                boolean all = true;
                for (int i = 0; i < 10; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        all &= rs.next() && rs.getString(1).equals("n" + i);
                    }
                }
                check(all, "prepared");
            }

            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("INSERT INTO j VALUES (100, 'committed')");
                conn.commit();
                st.executeUpdate("INSERT INTO j VALUES (101, 'rolled back')");
                conn.rollback();
            }
            check(one(conn, "SELECT count(*) FROM j WHERE id >= 100") == 1, "transactions");

            // a refused statement inside a transaction: 42501, then 25P02, then rollback
            try (Statement st = conn.createStatement()) {
                String state = "";
                try {
                    st.execute("SELECT pg_read_file('/etc/passwd')");
                } catch (SQLException e) {
                    state = e.getSQLState();
                }
                check(state.equals("42501"), "denied");
                try {
                    st.execute("SELECT 1");
                } catch (SQLException e) {
                    state = e.getSQLState();
                }
                check(state.equals("25P02"), "failed transaction");
                conn.rollback();
            }
            conn.setAutoCommit(true);
            check(one(conn, "SELECT 1") == 1, "usable after rollback");

            CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
            long in = copy.copyIn("COPY j FROM STDIN WITH (FORMAT csv)",
                new ByteArrayInputStream("200,a\n201,b\n".getBytes(StandardCharsets.UTF_8)));
            StringWriter out = new StringWriter();
            long copied = copy.copyOut("COPY (SELECT id FROM j WHERE id >= 200 ORDER BY id) TO STDOUT", out);
            check(in == 2 && copied == 2 && out.toString().equals("200\n201\n"), "copy");

            try (Statement st = conn.createStatement()) {
                st.execute("LISTEN jdbc_channel");
                st.execute("NOTIFY jdbc_channel, 'hello'");
            }
            PGNotification[] notes = conn.unwrap(PGConnection.class).getNotifications(5000);
            long pid = one(conn, "SELECT pg_backend_pid()");
            check(notes != null && notes.length == 1 && notes[0].getParameter().equals("hello")
                && notes[0].getPID() == pid && conn.unwrap(PGConnection.class).getBackendPID() == pid,
                "notify");

            // large objects go through the fast-path FunctionCall message
            conn.setAutoCommit(false);
            LargeObjectManager lom = conn.unwrap(PGConnection.class).getLargeObjectAPI();
            long oid = lom.createLO(LargeObjectManager.READWRITE);
            byte[] data = new byte[100_000];
            new java.util.Random(7).nextBytes(data);
            try (LargeObject lo = lom.open(oid, LargeObjectManager.READWRITE)) {
                lo.write(data);
            }
            try (LargeObject lo = lom.open(oid, LargeObjectManager.READ)) {
                check(Arrays.equals(lo.read(data.length), data), "large object");
            }
            lom.delete(oid);
            conn.commit();
            conn.setAutoCommit(true);

            try (Statement st = conn.createStatement()) {
                st.setQueryTimeout(1);
                String state = "";
                long started = System.nanoTime();
                try {
                    st.execute("SELECT pg_sleep(30)");
                } catch (SQLException e) {
                    state = e.getSQLState();
                }
                long ms = (System.nanoTime() - started) / 1_000_000;
                check(state.equals("57014") && ms < 10_000, "cancel");
            }
            check(one(conn, "SELECT 7") == 7, "usable after cancel");

            String syntax = "";
            try (Statement st = conn.createStatement()) {
                st.execute("SELEC 1");
            } catch (SQLException e) {
                syntax = e.getSQLState();
            }
            check(syntax.equals("42601"), "syntax error");
        }
        System.out.println("done");
    }
}
