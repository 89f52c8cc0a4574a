"""What each TLS stack is known to do, as the hints of the findings it leads to.

The same symptom has stack-specific causes (facts measured here, through a CONNECT
proxy): Erlang/OTP sends no SNI when ssl:connect upgrades a connected socket and
answers its own certificate failures with a bare handshake_failure; Java answers
them with certificate_unknown and pads its TLS 1.3 alerts; curl and Node check the
host name after the handshake and just close.
"""

from __future__ import annotations

from inspector.observe.stacks import ERLANG, GNUTLS, GO, JAVA, OPENSSL

# By stack name (observe/stacks.py); a client of no known stack (None) has no entry.
SNI_MISSING: dict[str | None, str] = {
    ERLANG: (
        "Erlang/OTP sends no SNI when ssl:connect upgrades an already connected socket "
        "(hackney's and other clients' proxy path: the hackney incident) or when the host "
        "is an IP address: pass {server_name_indication, \"HOST\"} (Elixir/hackney: "
        "ssl_options: [server_name_indication: 'HOST'])."
    ),
    JAVA: (
        "Java (JSSE) sends no SNI for IP literals, for names with an underscore, with "
        "-Djsse.enableSNIExtension=false, or on a socket layered over a tunnel without a "
        "host name: connect by a valid host name, or set "
        "SSLParameters.setServerNames(List.of(new SNIHostName(host)))."
    ),
    GO: (
        "Go sends the SNI of tls.Config.ServerName: when the app dials its own tunnel, "
        "set it (tls.Client(conn, &tls.Config{ServerName: host})); an empty ServerName "
        "with InsecureSkipVerify sends none."
    ),
    OPENSSL: (
        "OpenSSL-based clients send SNI only when the application sets it "
        "(SSL_set_tlsext_host_name; s_client -servername; Python server_hostname=; "
        "Node tls.connect servername:); they send none for an IP address."
    ),
    GNUTLS: (
        "GnuTLS sends the name given to gnutls_server_name_set(); gnutls-cli sends none "
        "with --disable-sni or when it connects by IP address."
    ),
}

# A client's alert that rejects the server's certificate, by stack.
CERTIFICATE_REJECTED: dict[str | None, str] = {
    JAVA: (
        "Java (JSSE) answers most certificate failures (untrusted issuer, expiry, host "
        "name) with certificate_unknown, and in TLS 1.3 encrypts it in a record padded "
        "to 35 bytes: the chain verdict says which; its trust store is "
        "$JAVA_HOME/lib/security/cacerts unless -Djavax.net.ssl.trustStore is set "
        "(-Djavax.net.debug=ssl:handshake prints the reason)."
    ),
    ERLANG: (
        "Erlang/OTP answers its own certificate failures (unknown CA, expiry, host name, "
        "key usage) with a bare handshake_failure: here it is the client that rejected "
        "the server's certificate, not the server that refused the client. See the chain "
        "verdict; in the client check cacertfile/cacerts, server_name_indication and "
        "customize_hostname_check."
    ),
    GO: (
        "Go encrypts its TLS 1.3 alerts; its error names the cause (x509: certificate "
        "signed by unknown authority, ... has expired, ... is valid for X, not Y): "
        "compare with the chain verdict and the app's RootCAs or the system pool."
    ),
    GNUTLS: (
        "GnuTLS encrypts its TLS 1.3 alerts; gnutls-cli prints the verification status "
        "(e.g. 'The certificate issuer is unknown'): compare with the chain verdict and "
        "its trust file (--x509cafile, or the system store)."
    ),
}

CLIENT_CERTIFICATE_REQUIRED = (
    "The server requires a client certificate and the client sent none: configure the "
    "client's certificate and key (curl --cert/--key, openssl s_client -cert/-key, Java "
    "javax.net.ssl.keyStore, Go tls.Config.Certificates, Erlang certfile/keyfile)."
)
