package proxytest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"
)

// dovecotBinary finds dovecot and checks that it is 2.3.x, whose
// configuration syntax this package writes.
func dovecotBinary() (string, error) {
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		// /usr/sbin is not on every user's PATH.
		if _, serr := os.Stat("/usr/sbin/dovecot"); serr == nil {
			bin, err = "/usr/sbin/dovecot", nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("%w: run .ci/run or apt-get install dovecot-imapd", ErrNoDovecot)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("proxytest: %s --version: %v", bin, err)
	}
	if v := strings.TrimSpace(string(out)); !strings.HasPrefix(v, "2.3.") {
		return "", fmt.Errorf("%w: proxytest needs Dovecot 2.3.x (Debian 12's dovecot-imapd); %s is %s", ErrNoDovecot, bin, v)
	}
	return bin, nil
}

// config renders dovecot.conf. Every path is inside dir, so nothing from
// /etc/dovecot is read and nothing of the system instance is touched.
// haproxy is the address of the listener that takes PROXY headers, ""
// for none.
func config(dir, plain, implicit, haproxy string, o DovecotOptions, ids accounts) string {
	_, plainPort, _ := net.SplitHostPort(plain)
	_, implicitPort, _ := net.SplitHostPort(implicit)
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }

	p("# Written by github.com/imapgate/imapgate/proxy/proxytest for one test.")
	p("instance_name = proxytest")
	p("base_dir = %s/run", dir)
	p("state_dir = %s/state", dir)
	p("log_path = %s/dovecot.log", dir)
	p("protocols = imap")
	p("listen = 127.0.0.1")
	p("")
	p("ssl = yes")
	p("ssl_cert = <%s/cert.pem", dir)
	p("ssl_key = <%s/key.pem", dir)
	p("# The proxy's 'none' upstream mode logs in without TLS.")
	p("disable_plaintext_auth = no")
	p("")
	p("auth_mechanisms = %s", o.AuthMechanisms)
	p("auth_verbose = yes")
	p("auth_verbose_passwords = no")
	p("auth_debug = no")
	if o.AuthFailureDelay > 0 {
		p("auth_failure_delay = %d secs", max(int64(o.AuthFailureDelay/time.Second), 1))
	} else {
		p("# Answer failures at once (the default tarpits them for 2s).")
		p("auth_failure_delay = 0")
	}
	p("verbose_proctitle = no")
	p("mailbox_idle_check_interval = %d secs", max(int64(o.IdleCheckInterval/time.Second), 1))
	p("login_trusted_networks = %s", o.TrustedNetworks)
	if haproxy != "" {
		p("haproxy_trusted_networks = %s", o.HAProxyTrustedNetworks)
	}
	p("# Log every ID a client sends; AuthAttempts uses it to skip the")
	p("# harness's own sessions (Append).")
	p("imap_id_log = *")
	if o.MasterUsers != nil {
		p("login_log_format_elements = user=<%%u> method=%%m rip=%%r lip=%%l mpid=%%e %%c session=<%%{session}> auth_user=<%%{auth_user}>")
	}
	p("")
	p("default_internal_user = %s", ids.internal)
	p("default_login_user = %s", ids.login)
	if ids.rootless {
		p("default_internal_group = %s", ids.internalGroup)
	}
	p("first_valid_uid = 0")
	p("first_valid_gid = 0")
	p("# Dovecot refuses mail access as root.")
	p("mail_uid = %d", ids.mailUID)
	p("mail_gid = %d", ids.mailGID)
	p("mail_location = maildir:%s/mail/%%u", dir)
	p("namespace inbox {")
	p("  inbox = yes")
	p("  separator = /")
	p("}")
	p("default_client_limit = %d", max(clientLimit, 2*o.MaxSessions))
	p("")
	if o.MasterUsers != nil {
		p("auth_master_user_separator = %s", o.MasterSeparator)
		p("passdb {")
		p("  driver = passwd-file")
		p("  args = username_format=%%u %s/master-users", dir)
		p("  master = yes")
		p("  # Then look the user up in the passdbs below: it must exist.")
		p("  pass = yes")
		p("}")
	}
	if len(o.DeniedUsers) > 0 {
		p("passdb {")
		p("  driver = static")
		p("  deny = yes")
		p("  username_filter = %s", strings.Join(o.DeniedUsers, " "))
		p("}")
	}
	p("passdb {")
	p("  driver = passwd-file")
	p("  args = username_format=%%u %s/users", dir)
	p("}")
	p("userdb {")
	p("  driver = passwd-file")
	p("  args = username_format=%%u %s/users", dir)
	p("}")
	p("")
	p("service imap-login {")
	p("  inet_listener imap {")
	p("    address = 127.0.0.1")
	p("    port = %s", plainPort)
	p("  }")
	p("  inet_listener imaps {")
	p("    address = 127.0.0.1")
	p("    port = %s", implicitPort)
	p("    ssl = yes")
	p("  }")
	if haproxy != "" {
		_, haproxyPort, _ := net.SplitHostPort(haproxy)
		p("  # Every connection here starts with a PROXY header (v1 or v2).")
		p("  inet_listener imap_haproxy {")
		p("    address = 127.0.0.1")
		p("    port = %s", haproxyPort)
		p("    haproxy = yes")
		p("  }")
	}
	p("  # High-performance mode: few processes, many clients each.")
	p("  service_count = 0")
	p("  client_limit = %d", max(loginClients, o.MaxSessions))
	p("  process_limit = %d", loginProcs)
	p("  process_min_avail = 1")
	if ids.rootless {
		p("  chroot =")
	}
	p("}")
	p("service imap {")
	p("  process_limit = %d", o.MaxSessions)
	p("  client_limit = 1")
	if o.ReuseProcesses {
		p("  service_count = 0")
		p("  process_min_avail = %d", reuseSpares)
		p("  # Thousands of idle processes left by a burst of sessions would all")
		p("  # wake for every new connection: let them go soon.")
		p("  idle_kill = 2 secs")
	}
	p("}")
	if !o.AuthPenalty || ids.rootless {
		p("service anvil {")
		if !o.AuthPenalty {
			p("  # No listener, no auth penalty: every test client is 127.0.0.1.")
			p("  unix_listener anvil-auth-penalty {")
			p("    mode = 0")
			p("  }")
		}
		if ids.rootless {
			p("  chroot =")
		}
		p("}")
	}
	p("protocol imap {")
	p("  mail_max_userip_connections = %d", max(userIPConns, 2*o.MaxSessions))
	p("}")
	return b.String()
}
