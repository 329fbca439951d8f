// pgjdbc through pgbroker: server-prepared statements from the first execution
// (prepareThreshold=1), several clients on threads, sessions longer than the borrow timeout.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

public class Workload {
    public static void main(String[] args) throws Exception {
        int clients = Integer.parseInt(System.getenv().getOrDefault("CLIENTS", "6"));
        int rounds = Integer.parseInt(System.getenv().getOrDefault("ROUNDS", "25"));
        String url = "jdbc:postgresql://" + System.getenv("PGB_HOST") + ":" + System.getenv("PGB_PORT")
            + "/app?user=app&password=app&prepareThreshold=1&sslmode=disable";
        AtomicInteger done = new AtomicInteger();
        List<Thread> threads = new ArrayList<>();
        List<Throwable> failures = new ArrayList<>();
        for (int n = 0; n < clients; n++) {
            final int id = n;
            Thread t = new Thread(() -> {
                try (Connection c = DriverManager.getConnection(url)) {
                    PreparedStatement q = c.prepareStatement("SELECT ?::int4 + 1, ?::text || '!', ?::float8 / 2");
                    PreparedStatement log = c.prepareStatement("INSERT INTO driver_log (driver, n) VALUES (?, ?)");
                    for (int i = 0; i < rounds; i++) {
                        q.setInt(1, id * 1000 + i);
                        q.setString(2, "j" + id);
                        q.setDouble(3, 5.0);
                        try (ResultSet rs = q.executeQuery()) {
                            rs.next();
                            if (rs.getInt(1) != id * 1000 + i + 1 || !rs.getString(2).equals("j" + id + "!") || rs.getDouble(3) != 2.5) {
                                throw new IllegalStateException("wrong row at " + i);
                            }
                        }
                        c.setAutoCommit(false);
                        log.setString(1, "pgjdbc");
                        log.setInt(2, i);
                        log.executeUpdate();
                        c.commit();
                        c.setAutoCommit(true);
                        done.incrementAndGet();
                        Thread.sleep(60);
                    }
                } catch (Throwable e) {
                    synchronized (failures) { failures.add(e); }
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join();
        if (!failures.isEmpty()) {
            failures.get(0).printStackTrace();
            System.exit(1);
        }
        System.out.println("ok " + done.get());
    }
}
