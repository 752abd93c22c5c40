// What a release build embeds about itself; packaging/build-binary.ts replaces this module in the single-file binary.

/** Version and git commit of a release build (the single-file binary), or null when running from the source tree or npm. */
export const RELEASE_BUILD: { readonly version: string; readonly commit: string } | null = null;
