# Offline stand-in for the public haproxy:lts-alpine image, used by
# deploy/compose-test.sh where no registry can be reached. The build context
# (assembled by deploy/build-images.sh) holds rootfs/ with Debian's haproxy
# at /usr/local/sbin/haproxy, the shared libraries `ldd` lists for it, and
# Debian's busybox-static as /usr/bin/wget for the compose healthcheck.
# Same paths and command as the official image, so docker-compose.yml needs
# no changes for it.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
USER 65532:65532
# HAProxy's soft stop: finish established connections, then exit.
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
