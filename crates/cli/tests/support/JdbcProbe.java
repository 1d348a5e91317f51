import java.sql.*;
import java.util.*;

/**
 * What DBeaver, Metabase and Tableau ask through pgJDBC: the DatabaseMetaData calls of table
 * discovery, then one prepared statement run seven times (pgJDBC moves to a named server-side
 * statement, and to binary results, after five). Prints one line per call: its name, then
 * "ok" and the row count, or "FAILED" and the message; then "prepared i" and the row.
 * Usage: java -cp postgresql.jar JdbcProbe.java JDBC_URL [SQL]
 */
public class JdbcProbe {
    interface Call { ResultSet run(DatabaseMetaData m) throws SQLException; }

    static int count(ResultSet rs) throws SQLException {
        int n = 0;
        while (rs.next()) n++;
        rs.close();
        return n;
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        String sql = args.length > 1 ? args[1] : null;
        Properties p = new Properties();
        p.setProperty("user", System.getenv().getOrDefault("PGUSER", "cryptolake"));
        if (System.getenv("PGPASSWORD") != null) p.setProperty("password", System.getenv("PGPASSWORD"));
        int failures = 0;
        try (Connection c = DriverManager.getConnection(url, p)) {
            DatabaseMetaData m = c.getMetaData();
            LinkedHashMap<String, Call> calls = new LinkedHashMap<>();
            calls.put("getTables", d -> d.getTables(null, null, "%", new String[]{"TABLE", "VIEW"}));
            calls.put("getColumns", d -> d.getColumns(null, "crypto_analytics", "ohlcv_1h", "%"));
            calls.put("getPrimaryKeys", d -> d.getPrimaryKeys(null, "crypto_analytics", "ohlcv_1h"));
            calls.put("getImportedKeys", d -> d.getImportedKeys(null, "crypto_analytics", "ohlcv_1h"));
            calls.put("getExportedKeys", d -> d.getExportedKeys(null, "crypto_analytics", "ohlcv_1h"));
            calls.put("getIndexInfo", d -> d.getIndexInfo(null, "crypto_analytics", "ohlcv_1h", false, true));
            calls.put("getTypeInfo", d -> d.getTypeInfo());
            calls.put("getFunctions", d -> d.getFunctions(null, null, "%"));
            calls.put("getTablePrivileges", d -> d.getTablePrivileges(null, "crypto_analytics", "%"));
            for (Map.Entry<String, Call> e : calls.entrySet()) {
                try {
                    System.out.println(e.getKey() + " ok " + count(e.getValue().run(m)));
                } catch (SQLException ex) {
                    failures++;
                    System.out.println(e.getKey() + " FAILED " + ex.getMessage().replace('\n', ' '));
                }
            }
            if (sql != null) {
                try (PreparedStatement ps = c.prepareStatement(sql)) {
                    for (int i = 1; i <= 7; i++) {
                        try (ResultSet rs = ps.executeQuery()) {
                            StringBuilder row = new StringBuilder();
                            int cols = rs.getMetaData().getColumnCount();
                            while (rs.next()) {
                                for (int j = 1; j <= cols; j++) row.append(j > 1 ? "|" : "").append(rs.getString(j));
                                row.append(";");
                            }
                            System.out.println("prepared " + i + " " + row);
                        } catch (SQLException ex) {
                            failures++;
                            System.out.println("prepared " + i + " FAILED " + ex.getMessage().replace('\n', ' '));
                        }
                    }
                }
            }
        }
        System.exit(failures == 0 ? 0 : 1);
    }
}
