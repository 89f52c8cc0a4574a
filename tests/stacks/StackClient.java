// A Java JSSE client for the stack tests (run as `java StackClient.java`): one case per
// input line, one result line per case, all in one JVM; each through an HTTP CONNECT
// proxy, the way HttpsURLConnection tunnels (a layered SSLSocket over the tunnel).
//
// Input (tab separated): id proxy_port host port sni|- cafile max_version(1.2|1.3)
// Output: id <TAB> ok|error <TAB> message
import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.security.KeyStore;
import java.security.cert.*;
import java.util.*;
import javax.net.ssl.*;

public class StackClient {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] f = line.split("\t");
            if (f.length != 7) continue;
            String result;
            try {
                run(f[1], f[2], f[3], f[4], f[5], f[6]);
                result = "ok\t";
            } catch (Exception e) {
                result = "error\t" + String.valueOf(e).replace('\n', ' ');
            }
            System.out.println(f[0] + "\t" + result);
            System.out.flush();
        }
    }

    static void run(String proxy, String host, String port, String sni, String cafile, String max)
            throws Exception {
        try (Socket raw = new Socket()) {
            raw.connect(new InetSocketAddress("127.0.0.1", Integer.parseInt(proxy)), 10000);
            raw.setSoTimeout(20000);
            OutputStream out = raw.getOutputStream();
            String target = host + ":" + port;
            out.write(("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n")
                    .getBytes(StandardCharsets.US_ASCII));
            String head = readHead(raw.getInputStream());
            if (!head.startsWith("HTTP/1.1 200") && !head.startsWith("HTTP/1.0 200"))
                throw new IOException("CONNECT answered " + head);
            SSLSocket tls = (SSLSocket) context(cafile).getSocketFactory()
                    .createSocket(raw, host, Integer.parseInt(port), true);
            SSLParameters p = tls.getSSLParameters();
            p.setEndpointIdentificationAlgorithm("HTTPS");
            p.setProtocols(max.equals("1.2") ? new String[] {"TLSv1.2"}
                                             : new String[] {"TLSv1.3", "TLSv1.2"});
            if (sni.equals("-")) p.setServerNames(Collections.emptyList());
            else p.setServerNames(List.of(new SNIHostName(sni)));
            tls.setSSLParameters(p);
            tls.startHandshake();
            tls.getOutputStream().write(("GET / HTTP/1.1\r\nHost: " + host
                    + "\r\nConnection: close\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            String reply = readHead(tls.getInputStream());
            if (!reply.startsWith("HTTP/1.1 200")) throw new IOException("no HTTP answer: " + reply);
        }
    }

    static SSLContext context(String cafile) throws Exception {
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null, null);
        int i = 0;
        try (InputStream pem = Files.newInputStream(Path.of(cafile))) {
            for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(pem))
                ks.setCertificateEntry("root" + i++, c);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(null, tmf.getTrustManagers(), null);
        return ctx;
    }

    static String readHead(InputStream in) throws IOException {
        StringBuilder sb = new StringBuilder();
        int c;
        while (sb.length() < 8192 && (c = in.read()) != -1) {
            sb.append((char) c);
            if (sb.length() >= 4 && sb.substring(sb.length() - 4).equals("\r\n\r\n")) break;
        }
        return sb.toString();
    }
}
