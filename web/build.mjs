// Bundle the viewer page into ../promptseg/server/static (committed; users need no npm).
// Also writes THIRD_PARTY_LICENSES.txt: the licence of every npm package in the bundle.
import * as esbuild from 'esbuild'
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'promptseg', 'server', 'static')
rmSync(out, { recursive: true, force: true })
mkdirSync(join(out, 'assets'), { recursive: true })

const result = await esbuild.build({
  entryPoints: [join(here, 'src', 'main.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  outfile: join(out, 'assets', 'viewer.js'),
  metafile: true,
  legalComments: 'none', // the licences go to THIRD_PARTY_LICENSES.txt instead
  logLevel: 'warning',
})
copyFileSync(join(here, 'src', 'index.html'), join(out, 'index.html'))
copyFileSync(join(here, 'src', 'style.css'), join(out, 'assets', 'style.css'))

// which npm packages ended up in the bundle
const packages = new Set()
for (const input of Object.keys(result.metafile.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//g)
  if (m) packages.add(m[m.length - 1].replace(/^node_modules\//, '').replace(/\/$/, ''))
}
const own = { '@niivue/niivue': join(here, 'licenses', 'niivue-LICENSE.txt') } // its npm package ships no LICENSE file
let text = 'Third-party software bundled in assets/viewer.js (built by `make web` from web/).\n'
for (const name of [...packages].sort()) {
  const dir = join(here, 'node_modules', name)
  const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  let licence = own[name]
  if (!licence) {
    const file = readdirSync(dir).find((f) => /^licen[cs]e/i.test(f))
    licence = file ? join(dir, file) : null
  }
  if (!licence || !existsSync(licence)) throw new Error(`no licence text for ${name}`)
  text += `\n${'='.repeat(78)}\n${name} ${meta.version} (${meta.license})\n${'='.repeat(78)}\n\n${readFileSync(licence, 'utf8').trim()}\n`
}
writeFileSync(join(out, 'assets', 'THIRD_PARTY_LICENSES.txt'), text)
console.log(`bundled ${packages.size} packages into ${out}`)
