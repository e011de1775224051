/**
 * Container images for the end-to-end tests, without a registry or a Docker daemon: netoken's
 * image built from the repository's Dockerfile with buildah (chroot isolation, vfs storage in a
 * temporary directory), from the local base images test/k8s/build-tools.sh makes (Debian by
 * debootstrap, Node.js from the npm registry), and the pod sandbox (pause) image compiled from
 * pause.c. Images leave as docker-archive files that containerd imports.
 *
 * buildah runs in a mount namespace of its own, so that no mount of a build step can outlive it
 * or be reached when the storage directory is removed.
 */
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { repoRoot, run, startWatchdog, toolsDir, toolVersions, type CommandResult } from './cluster.js';

/** The base images build-tools.sh makes (`debian`, `nodejs`), as buildah FROM references. */
export function localBaseImages(): { debian: string; node: string } {
  const v = toolVersions();
  return {
    debian: `oci-archive:${join(toolsDir(), `debian-${v.DEBIAN_RELEASE}`, 'image.oci.tar')}`,
    node: `oci-archive:${join(toolsDir(), `nodejs-${v.NODE_VERSION}`, 'image.oci.tar')}`,
  };
}

/**
 * The certificate bundle this machine trusts: given to the build so that npm inside it trusts
 * the same authorities (a TLS-intercepting proxy's CA included), through the Dockerfile's
 * NODE_EXTRA_CA_CERTS argument.
 */
const HOST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const BUILD_CA_PATH = '/run/netoken-build/ca.crt';

export interface BuildResult {
  /** the image reference, e.g. localhost/netoken:0.1.0 */
  ref: string;
  /** buildah's image id */
  id: string;
  /** wall-clock seconds of the build */
  seconds: number;
}

/** A buildah with its own storage in a temporary directory; close() removes it. */
export class ImageBuilder {
  readonly dir: string;
  private readonly watchdog: ChildProcess;

  constructor(prefix = `nttest-${process.pid}-images-`) {
    this.dir = mkdtempSync(join(tmpdir(), prefix));
    // A test process that dies without close() leaves no storage behind.
    this.watchdog = startWatchdog('netoken-images-watchdog', 'rm -rf --one-file-system "$1"', [this.dir]);
  }

  /** Runs buildah with this storage in a private mount namespace; never throws for a non-zero exit. */
  buildah(args: string[], timeoutMs = 60_000): Promise<CommandResult> {
    return run(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        '--',
        'buildah',
        '--root',
        join(this.dir, 'root'),
        '--runroot',
        join(this.dir, 'run'),
        '--storage-driver',
        'vfs',
        ...args,
      ],
      { timeoutMs },
    );
  }

  private async buildahOk(args: string[], timeoutMs = 60_000): Promise<string> {
    const r = await this.buildah(args, timeoutMs);
    if (r.code !== 0)
      throw new Error(
        `buildah ${args.slice(0, 2).join(' ')} failed (exit ${r.code}):\n${(r.stdout + r.stderr).trim().split('\n').slice(-40).join('\n')}`,
      );
    return r.stdout;
  }

  /**
   * Builds the repository's Dockerfile from the local base images, as `ref`, with `labels`;
   * the build's output goes to `log` (a file). With `layers`, steps are cached in this storage,
   * so a second build of the same sources only redoes what changed.
   */
  async buildNetoken(
    ref: string,
    opts: { labels?: Record<string, string>; log: string; layers?: boolean; timeoutMs?: number },
  ): Promise<BuildResult> {
    const base = localBaseImages();
    const start = Date.now();
    const args = [
      'build',
      '--isolation',
      'chroot',
      `--layers=${opts.layers ?? false}`,
      // The Dockerfile's SHELL needs the docker format (OCI image configs have no shell).
      '--format',
      'docker',
      '--build-arg',
      `DEBIAN_IMAGE=${base.debian}`,
      '--build-arg',
      `RUNTIME_IMAGE=${base.debian}`,
      '--build-arg',
      `NODE_IMAGE=${base.node}`,
      '--volume',
      `${HOST_CA_BUNDLE}:${BUILD_CA_PATH}:ro`,
      '--build-arg',
      `NODE_EXTRA_CA_CERTS=${BUILD_CA_PATH}`,
      ...Object.entries(opts.labels ?? {}).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
      '-f',
      join(repoRoot, 'Dockerfile'),
      '-t',
      ref,
      repoRoot,
    ];
    const r = await this.buildah(args, opts.timeoutMs ?? 1_800_000);
    writeFileSync(opts.log, `${r.stdout}${r.stderr}`);
    if (r.code !== 0) {
      throw new Error(
        `building the Dockerfile failed (buildah exit ${r.code}); last lines (full log: ${opts.log}):\n${(r.stdout + r.stderr).trim().split('\n').slice(-40).join('\n')}`,
      );
    }
    const seconds = (Date.now() - start) / 1000;
    const id = (await this.buildahOk(['inspect', '--type', 'image', '--format', '{{.FromImageID}}', ref])).trim();
    return { ref, id, seconds };
  }

  /**
   * The pod sandbox image: pause.c compiled statically, alone in an image as `ref`. It holds a
   * pod's namespaces and does nothing else.
   */
  async buildPause(ref: string): Promise<void> {
    const bin = join(this.dir, 'pause');
    const cc = await run('cc', ['-Os', '-static', '-Wall', '-Werror', '-o', bin, join(repoRoot, 'test/k8s/pause.c')]);
    if (cc.code !== 0)
      throw new Error(
        `compiling test/k8s/pause.c failed (is gcc with static glibc installed? apt-get install gcc libc6-dev):\n${cc.stderr}`,
      );
    const ctr = (await this.buildahOk(['from', 'scratch'])).trim();
    await this.buildahOk(['copy', '--chmod', '0755', ctr, bin, '/pause']);
    await this.buildahOk(['config', '--entrypoint', '["/pause"]', '--cmd', '', ctr]);
    await this.buildahOk(['commit', '--rm', '--quiet', ctr, ref]);
  }

  /**
   * Writes `ref` as a docker-archive (what `ctr images import` and `docker load` take): its path
   * and size, which is the image's size as `docker images` shows it (uncompressed layers).
   */
  async exportArchive(ref: string): Promise<{ path: string; sizeBytes: number }> {
    const path = join(this.dir, `${ref.replace(/[^A-Za-z0-9.-]+/g, '_')}.tar`);
    await this.buildahOk(['push', '--quiet', ref, `docker-archive:${path}:${ref}`], 300_000);
    return { path, sizeBytes: statSync(path).size };
  }

  /** Removes the storage (nothing in it is mounted: buildah ran in its own mount namespaces). */
  async close(): Promise<void> {
    await run('rm', ['-rf', '--one-file-system', this.dir], { timeoutMs: 300_000 });
    this.watchdog.kill('SIGKILL');
  }
}
