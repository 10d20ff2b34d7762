#!/usr/bin/env bash
# Prepares (once) what the tests need to boot a throwaway virtual machine
# with Debian's stock kernel: the kernel, the modules the tests load (IPVS,
# SCTP, netfilter...) and a tiny initramfs that mounts this machine's own
# root filesystem read-only over 9p under a memory overlay. Tests that need
# a kernel feature this machine lacks (IPVS, for UDP and SCTP listeners)
# run inside it. Prints the directory; kept under target/ so repeated runs
# reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/vm"
format=2 # bump when the layout below changes

if [ -f "$out/ready" ] && [ "$(cat "$out/ready")" = "$format" ]; then
    echo "$out"
    exit 0
fi

rm -rf "$out"
mkdir -p "$out/download"
cd "$out/download"
# The stock kernel's package, as linux-image-amd64 names it today.
package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$package" ]; then
    apt-get update -qq >&2
    package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
apt-get download "$package" >&2 2>/dev/null || {
    apt-get update -qq >&2
    apt-get download "$package" >&2
}
deb=$(ls ./*.deb)
# Only the kernel and the module trees the guests use.
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$out" --wildcards \
    './boot/vmlinuz-*' \
    './lib/modules/*/modules.*' \
    './lib/modules/*/kernel/net/*' \
    './lib/modules/*/kernel/fs/9p/*' \
    './lib/modules/*/kernel/fs/netfs/*' \
    './lib/modules/*/kernel/fs/fscache/*' \
    './lib/modules/*/kernel/fs/overlayfs/*' \
    './lib/modules/*/kernel/drivers/virtio/*' \
    './lib/modules/*/kernel/drivers/net/veth.ko' \
    './lib/modules/*/kernel/lib/*' \
    './lib/modules/*/kernel/crypto/*'
rm -rf "$out/download"
version=$(ls "$out/lib/modules")
depmod -b "$out" "$version"
ln -s "boot/vmlinuz-$version" "$out/kernel"
echo "$version" > "$out/kernel-version"

# The initramfs: busybox and the modules needed to reach the root over 9p.
initrd="$out/initrd.d"
mkdir -p "$initrd"/{bin,mods,proc,sys,dev,lower,upper,newroot}
cp "$(command -v busybox)" "$initrd/bin/busybox"
modules="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay"
for module in $modules; do
    cp "$(find "$out/lib/modules" -name "$module.ko" | head -1)" "$initrd/mods/"
done
cat > "$initrd/init" <<EOF
#!/bin/busybox sh
# Stage 1: reach the host's root (read-only) and the job directory
# (read-write), put a memory overlay on the root, and hand over to the
# job's script.
bb=/bin/busybox
\$bb mount -t proc proc /proc
\$bb mount -t sysfs sys /sys
\$bb mount -t devtmpfs dev /dev
for module in $modules; do \$bb insmod /mods/\$module.ko || echo "vm: cannot load \$module"; done
\$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 hostroot /lower
\$bb mount -t tmpfs -o size=75% tmpfs /upper
\$bb mkdir -p /upper/data /upper/work
\$bb mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot
\$bb mkdir -p /newroot/job
\$bb mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 job /newroot/job
\$bb umount /proc /sys /dev 2>/dev/null
exec \$bb switch_root /newroot /bin/sh /job/run.sh
EOF
chmod 0755 "$initrd/init"
(cd "$initrd" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$out/initrd.gz")
rm -rf "$initrd"
echo "$format" > "$out/ready"
echo "$out"
