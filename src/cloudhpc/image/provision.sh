#!/bin/sh
# cloudhpc's node image, one recipe for every place it is built: Packer on Azure (on
# Debian 12, or on Azure's Ubuntu 22.04 HPC image for clusters with RDMA node sets: the
# same package names), and `cloudhpc image build` here (on a Debian 12 root made by
# mmdebstrap, for the rehearsal). Everything a node needs is installed now, so that a node installs nothing
# at boot: scale-set VMs have no way out to the internet by default.
#
#   provision.sh WHEELHOUSE REQUIREMENT...   e.g. provision.sh /tmp/wheelhouse cloudhpc==0.1.0
#
# WHEELHOUSE holds cloudhpc's wheel and its dependencies' (built where the recipe is
# exported, pinned by sha256): nothing is fetched from PyPI on the image either.
set -eu
export DEBIAN_FRONTEND=noninteractive
PACKAGES="cloud-init systemd systemd-sysv dbus ca-certificates iproute2 iputils-ping procps
 util-linux kmod sudo locales netbase openssh-server python3 python3-venv
 munge slurmd slurmctld slurm-client slurmdbd mariadb-server
 openmpi-bin libopenmpi-dev python3-mpi4py hpcc nfs-common nfs-kernel-server"
apt-get update -q
# policy-rc.d: packages are not started while they are installed (the node's supervisor
# starts the cluster's daemons, with the cluster's configuration)
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
apt-get install -y -q --no-install-recommends $PACKAGES
rm -f /usr/sbin/policy-rc.d
for unit in munge slurmd slurmctld slurmdbd mariadb nfs-kernel-server; do
  systemctl disable "$unit" >/dev/null 2>&1 || true
done
# cloud-init's locale module needs a generated locale
sed -i 's/^# *\(en_US.UTF-8\)/\1/' /etc/locale.gen && locale-gen >/dev/null
wheelhouse=$1
shift
python3 -m venv /opt/cloudhpc
/opt/cloudhpc/bin/pip install -q --no-cache-dir --no-index --find-links "$wheelhouse" "$@"
apt-get clean
rm -rf /var/lib/apt/lists/*
