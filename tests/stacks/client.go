// A Go crypto/tls client for the stack tests: one case per input line, one result
// line per case, each through an HTTP CONNECT proxy (net/http's proxy path would do
// the same: CONNECT, then tls.Client over the tunnel).
//
// Input (tab separated): id proxy_port host port sni|- cafile max_version(1.2|1.3)
// Output: id <TAB> ok|error <TAB> message
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Split(in.Text(), "\t")
		if len(f) != 7 {
			continue
		}
		if err := run(f[1], f[2], f[3], f[4], f[5], f[6]); err != nil {
			fmt.Printf("%s\terror\t%s\n", f[0], strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Printf("%s\tok\t\n", f[0])
		}
	}
}

func run(proxy, host, port, sni, cafile, max string) error {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+proxy, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s:%s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", host, port, host, port)
	head := bufio.NewReader(conn)
	status, err := head.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200") {
		return fmt.Errorf("CONNECT answered %q", status)
	}
	for line := status; line != "\r\n"; {
		if line, err = head.ReadString('\n'); err != nil {
			return err
		}
	}
	pem, err := os.ReadFile(cafile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS13}
	if max == "1.2" {
		cfg.MaxVersion = tls.VersionTLS12
	}
	if sni != "-" {
		cfg.ServerName = sni
	} else {
		// Go sends no SNI only with an empty ServerName, which needs InsecureSkipVerify;
		// the chain and the CONNECT host are then checked here, as an app would.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, len(raw))
			for i, der := range raw {
				if certs[i], err = x509.ParseCertificate(der); err != nil {
					return err
				}
			}
			if len(certs) == 0 {
				return errors.New("no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter})
			return err
		}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	reply, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil || !strings.HasPrefix(reply, "HTTP/1.1 200") {
		return fmt.Errorf("no HTTP answer: %q %v", reply, err)
	}
	return nil
}
