// promptseg's viewer page: NiiVue shows the scan and the label map (its drawing layer); prompts,
// propagation, edits and undo go to the server, which owns the segmentation.

import { DRAG_MODE, MULTIPLANAR_TYPE, NVImage, Niivue, SHOW_RENDER, SLICE_TYPE } from '@niivue/niivue'
import { Api } from './api.js'
import { Grid, encodeMask, forEachMaskVoxel } from './grid.js'

const $ = (id) => document.getElementById(id)

// label colours: ITK-SNAP's default table, as promptseg.session.labels.PALETTE
const PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255],
  [255, 239, 213], [0, 0, 205], [205, 133, 63], [210, 180, 140], [102, 205, 170], [0, 0, 128]]
const WINDOWS = [ // name, level, width (HU); 'auto' uses the scan's robust range
  ['soft', 40, 400], ['lung', -600, 1500], ['bone', 400, 1800], ['brain', 40, 80], ['auto', null, null]]
const TOOLS = { c: 'navigate', r: 'box', p: 'points', b: 'brush', e: 'eraser' }

const state = {
  api: null, nv: null, grid: null, session: null, files: [],
  tool: 'navigate', label: 1, labels: new Map(), propagating: false, reference: null,
  synced: null, windowIndex: 0, layoutSingle: false, slice: -1, busy: 0,
  ready: false, webgl: true, prompts: 0, propagations: 0, edits: 0, undos: 0, lastEvent: null,
}
window.promptsegViewer = state // inspected by the browser tests

function status(text, isError = false) {
  const el = $('status')
  el.textContent = text
  el.classList.toggle('error', isError)
}

async function guarded(what, action) {
  state.busy++
  try {
    return await action()
  } catch (error) {
    status(`${what}: ${error.message}`, true)
    console.error(error)
    return undefined
  } finally {
    state.busy--
  }
}

// -- start ------------------------------------------------------------------------------
function takeToken() {
  const url = new URL(window.location.href)
  const token = url.searchParams.get('token')
  if (token) {
    sessionStorage.setItem('promptseg-token', token)
    url.searchParams.delete('token') // keep it out of the address bar and history
    history.replaceState(null, '', url.pathname + url.search + url.hash)
  }
  return token || sessionStorage.getItem('promptseg-token')
}

function hasWebGL2() {
  try {
    return !!document.createElement('canvas').getContext('webgl2')
  } catch {
    return false
  }
}

async function boot() {
  state.api = new Api(takeToken())
  if (!hasWebGL2()) {
    state.webgl = false
    $('nowebgl').hidden = false
    $('gl').hidden = true
    status('WebGL2 is not available in this browser: the viewer cannot draw (see the message on the left)', true)
    state.ready = true
    return
  }
  const nv = new Niivue({
    backColor: [0, 0, 0, 1],
    show3Dcrosshair: false,
    isColorbar: false,
    dragAndDropEnabled: false,
    logLevel: 'warn',
    multiplanarShowRender: SHOW_RENDER.NEVER,
    multiplanarLayout: MULTIPLANAR_TYPE.GRID,
    crosshairColor: [1, 0.8, 0, 0.6],
    clipPlaneHotKey: '',
    cycleClipPlaneHotKey: '',
    viewModeHotKey: '',
    maxDrawUndoBitmaps: 2, // undo is the server's
    isNearestInterpolation: true,
    isRadiologicalConvention: true, // patient's right on the screen's left, as in Slicer and ITK-SNAP
  })
  state.nv = nv
  await nv.attachToCanvas($('gl'))
  nv.drawOpacity = 0.55
  nv.onDragRelease = onDragRelease
  nv.onLocationChange = onLocationChange
  nv.onDrawingChanged = (action) => { if (action === 'draw') syncEdits() }
  setTool('navigate')
  wireControls()
  const info = await guarded('connecting', () => state.api.json('GET', '/api/info'))
  if (!info) { state.ready = true; return }
  if (info.upload_limit > 0) $('upload-label').hidden = false
  const files = await guarded('listing files', () => state.api.json('GET', '/api/files'))
  state.files = files ? files.files : []
  for (const select of [$('file'), $('reference')]) {
    select.replaceChildren(...state.files.map((f) => new Option(f.path, f.path)))
  }
  const likelyMask = state.files.find((f) => /label|mask|seg|gt/i.test(f.path))
  if (likelyMask) $('reference').value = likelyMask.path
  const wanted = new URL(window.location.href).searchParams.get('open')
  if (wanted) {
    $('file').value = wanted
    await openScan(wanted)
  } else {
    status(`promptseg ${info.version}: pick a scan and press Open (${info.models[0]})`)
  }
  state.ready = true
}

// -- opening a scan -------------------------------------------------------------------
async function openScan(path, upload = null) {
  await guarded('opening', async () => {
    status(`opening ${path}…`)
    const nv = state.nv
    if (state.session) state.api.json('DELETE', `/api/sessions/${state.session.id}`).catch(() => {})
    state.session = upload
      ? await (await fetch(`/api/uploads?name=${encodeURIComponent(upload.name)}`, {
        method: 'POST', headers: state.api.headers(), body: upload })).json()
      : await state.api.json('POST', '/api/sessions', { path })
    if (!state.session.id) throw new Error(state.session.detail || 'the upload failed')
    const bytes = await state.api.bytes(`/api/sessions/${state.session.id}/image.nii.gz`)
    const image = await NVImage.new(bytes, 'image.nii.gz')
    while (nv.volumes.length) nv.removeVolume(nv.volumes[0])
    nv.addVolume(image)
    state.grid = new Grid(image)
    state.reference = null
    $('dice').textContent = ''
    nv.createEmptyDrawing()
    state.synced = new Uint8Array(nv.drawBitmap.length)
    state.labels = new Map()
    await ensureLabel(1)
    selectLabel(1)
    state.windowIndex = image.global_min < -500 ? 0 : WINDOWS.length - 1 // CT: soft tissue; else auto
    applyWindow()
    setLayout(false)
    goToSlice(Math.floor(state.grid.nz / 2))
    const [Z, H, W] = state.session.shape
    status(`${path}: ${W} x ${H} x ${Z} voxels. Box tool (R): drag a box on the ${state.grid.promptViewName} view`)
  })
}

// -- coordinates --------------------------------------------------------------------------
function currentIJK() {
  const nv = state.nv
  return state.grid.rasToNative(nv.frac2vox(nv.scene.crosshairPos))
}

function goToSlice(k) {
  const { nv, grid } = state
  if (!grid) return
  const ijk = currentIJK()
  ijk[2] = Math.max(0, Math.min(grid.nz - 1, k))
  nv.scene.crosshairPos = nv.vox2frac(grid.nativeToRas(ijk))
  nv.createOnLocationChange()
  nv.drawScene()
}

// move the crosshair to voxel (i, j) of slice k, so the other views cut through the object there
function centreOn(k, i, j) {
  const { nv, grid } = state
  nv.scene.crosshairPos = nv.vox2frac(grid.nativeToRas([Math.round(i), Math.round(j), k]))
  nv.createOnLocationChange()
  nv.drawScene()
}

// IJK voxel centre -> client (CSS pixel) position on the prompt view; for tests and tools
state.ijkToClient = (i, j, k) => {
  const { nv, grid } = state
  const found = nv.frac2canvasPosWithTile(nv.vox2frac(grid.nativeToRas([i, j, k])), grid.promptView)
  if (!found) return null
  const rect = nv.canvas.getBoundingClientRect()
  const dpr = nv.uiData.dpr || window.devicePixelRatio || 1
  return { x: rect.left + found.pos[0] / dpr, y: rect.top + found.pos[1] / dpr }
}
state.goToSlice = goToSlice
// the label shown at IJK voxel (i, j, k) (NiiVue's drawing layer)
state.labelAt = (i, j, k) => {
  const { base, si, sj } = state.grid.slice(k)
  return state.nv.drawBitmap[base + i * si + j * sj]
}
state.currentIJK = () => currentIJK()

let focusTimer = null
function onLocationChange() {
  if (!state.grid) return
  const [i, j, k] = currentIJK()
  $('slice-info').textContent = `slice ${k} / ${state.grid.nz - 1} · voxel (${i}, ${j}, ${k})`
  if (k !== state.slice) {
    state.slice = k
    clearTimeout(focusTimer)
    focusTimer = setTimeout(() => {
      if (state.session) state.api.json('POST', `/api/sessions/${state.session.id}/focus`, { slice: k }).catch(() => {})
    }, 150)
  }
}

// -- the label map in NiiVue's drawing layer ------------------------------------------------
function writeSlice(k, masks) {
  const { nv, grid, synced } = state
  const { base, si, sj } = grid.slice(k)
  const bitmap = nv.drawBitmap
  for (let j = 0; j < grid.ny; j++) {
    for (let i = 0; i < grid.nx; i++) {
      const index = base + i * si + j * sj
      bitmap[index] = 0
      synced[index] = 0
    }
  }
  for (const [label, mask] of Object.entries(masks)) {
    const value = Number(label)
    if (value > 255) continue // the drawing layer holds labels 1..255
    forEachMaskVoxel(mask, (i, j) => {
      const index = base + i * si + j * sj
      bitmap[index] = value
      synced[index] = value
    })
  }
}

async function reloadLabels() {
  const { nv, api, session } = state
  const bytes = await api.bytes(`/api/sessions/${session.id}/labels.nii.gz`)
  const labels = await NVImage.new(bytes, 'labels.nii.gz')
  nv.loadDrawing(labels)
  state.synced = nv.drawBitmap.slice()
  applyLut()
}

function applyLut() {
  const lut = new Uint8ClampedArray(256 * 4)
  const names = ['']
  for (let v = 1; v < 256; v++) {
    const label = state.labels.get(v)
    const rgb = label ? label.color : PALETTE[(v - 1) % PALETTE.length]
    lut.set([rgb[0], rgb[1], rgb[2], label && !label.visible ? 0 : 255], v * 4)
    names.push(label ? label.name : `label ${v}`)
  }
  state.nv.drawLut = { lut, labels: names }
  state.nv.updateGLVolume()
}

// brush / eraser strokes -> the server (the label's new mask on each touched slice)
async function syncEdits() {
  const { nv, grid, synced, session } = state
  if (!session) return
  const bitmap = nv.drawBitmap
  const touched = new Map() // label -> set of slices
  for (let n = 0; n < bitmap.length; n++) {
    if (bitmap[n] === synced[n]) continue
    const k = grid.rasIndexToNative(n)[2]
    for (const v of [bitmap[n], synced[n]]) {
      if (v === 0) continue
      if (!touched.has(v)) touched.set(v, new Set())
      touched.get(v).add(k)
    }
  }
  synced.set(bitmap)
  for (const [label, slices] of touched) {
    const items = [...slices].map((k) => {
      const { base, si, sj } = grid.slice(k)
      return { slice: k, ...encodeMask(grid.nx, grid.ny, (i, j) => bitmap[base + i * si + j * sj] === label) }
    })
    await guarded('saving the edit', async () => {
      const answer = await state.api.json('POST', `/api/sessions/${session.id}/edit`, { label, slices: items })
      for (const event of answer.slices) writeSlice(event.slice, event.masks)
      await ensureLabel(label)
    })
  }
  nv.refreshDrawing(true)
  state.edits++
  status(`edit saved (${touched.size} label${touched.size === 1 ? '' : 's'})`)
  refreshDice()
}

// -- prompts -------------------------------------------------------------------------------
async function prompt(body) {
  if (state.propagating) return status('wait for the propagation to end, or cancel it (Esc)', true)
  await guarded('prompt', async () => {
    const result = await state.api.json('POST', `/api/sessions/${state.session.id}/prompt`, { label: state.label, ...body })
    writeSlice(result.slice, result.masks)
    if (body.box) centreOn(result.slice, (body.box[0] + body.box[2]) / 2, (body.box[1] + body.box[3]) / 2)
    state.nv.refreshDrawing(true)
    state.prompts++
    state.lastEvent = result
    await ensureLabel(state.label)
    status(`slice ${result.slice}: ${result.area} voxels, model score ${result.score.toFixed(2)} (${Math.round(result.seconds * 1000)} ms). ` +
      'Enter propagates; points (P) refine.')
    refreshDice()
  })
}

function onDragRelease(drag) {
  if (state.tool !== 'box' || !state.grid) return
  const { grid } = state
  if (drag.tileIdx < 0 || drag.axCorSag !== grid.promptView) {
    return status(`draw boxes on the ${grid.promptViewName} view: the model segments the scan's own slices`, true)
  }
  const a = grid.rasToNative(drag.voxStart)
  const b = grid.rasToNative(drag.voxEnd)
  const box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])]
  if (box[2] - box[0] < 1 || box[3] - box[1] < 1) return status('drag a larger box (at least 2 x 2 voxels)', true)
  prompt({ slice: a[2], box })
}

let pointerStart = null
function onPointerDown(event) {
  pointerStart = { x: event.clientX, y: event.clientY }
}

function onPointerUp(event) {
  if (state.tool !== 'points' || event.button !== 0 || !state.grid || !pointerStart) return
  if (Math.hypot(event.clientX - pointerStart.x, event.clientY - pointerStart.y) > 4) return
  const { nv, grid } = state
  const dpr = nv.uiData.dpr || window.devicePixelRatio || 1
  const rect = nv.canvas.getBoundingClientRect()
  const x = (event.clientX - rect.left) * dpr
  const y = (event.clientY - rect.top) * dpr
  const tile = nv.tileIndex(x, y)
  if (tile < 0 || nv.screenSlices[tile].axCorSag !== grid.promptView) {
    return status(`click points on the ${grid.promptViewName} view`, true)
  }
  const frac = nv.canvasPos2frac([x, y])
  if (frac[0] < 0) return
  const ijk = grid.rasToNative(nv.frac2vox(frac))
  if (!grid.contains(ijk)) return
  const inside = !(event.shiftKey || event.altKey)
  prompt({ slice: ijk[2], points: [[ijk[0], ijk[1], inside ? 1 : 0]] })
}

// -- propagation ---------------------------------------------------------------------------
async function propagate() {
  if (!state.session || state.propagating) return
  state.propagating = true
  $('propagate').disabled = true
  $('cancel').disabled = false
  const progress = $('progress')
  progress.removeAttribute('value') // indeterminate until the end
  let count = 0
  await guarded('propagation', async () => {
    status(`propagating label ${state.label}…`)
    for await (const event of state.api.stream(`/api/sessions/${state.session.id}/propagate`, { label: state.label })) {
      state.lastEvent = event
      if (event.type === 'slice') {
        writeSlice(event.slice, event.masks)
        state.nv.refreshDrawing(true)
        count++
        $('progress-text').textContent = `${count} slice${count === 1 ? '' : 's'} done (last: ${event.slice})`
      } else if (event.type === 'done') {
        const stops = Object.entries(event.stops).map(([d, why]) => `${d}: ${why}`).join('; ')
        $('progress-text').textContent = `${event.slices.length} slices ${event.cancelled ? '(cancelled)' : ''} — ${stops}`
        status(`${event.cancelled ? 'cancelled' : 'propagated'}: slices ${event.slices[0] ?? '-'}…${event.slices.at(-1) ?? '-'}`)
      } else if (event.type === 'error') {
        throw new Error(event.message)
      }
    }
    state.propagations++
  })
  progress.value = 1
  state.propagating = false
  $('propagate').disabled = false
  $('cancel').disabled = true
  refreshDice()
}

function cancel() {
  if (state.propagating) state.api.json('POST', `/api/sessions/${state.session.id}/cancel`, { label: state.label }).catch(() => {})
}

// -- undo, save, compare --------------------------------------------------------------------
async function undoRedo(which) {
  if (!state.session || state.propagating) return
  await guarded(which, async () => {
    const answer = await state.api.json('POST', `/api/sessions/${state.session.id}/${which}`)
    if (answer.label === null) return status(`nothing to ${which}`)
    updateLabels(answer.labels)
    await reloadLabels()
    state.undos++
    status(`${which} (label ${answer.label})`)
    refreshDice()
  })
}

async function save() {
  if (!state.session) return
  await guarded('save', async () => {
    const format = $('format').value
    const answer = await state.api.json('POST', `/api/sessions/${state.session.id}/export`, { format })
    const bytes = await state.api.bytes(answer.download)
    const link = document.createElement('a')
    link.href = URL.createObjectURL(new Blob([bytes]))
    link.download = answer.name
    document.body.append(link)
    link.click()
    link.remove()
    setTimeout(() => URL.revokeObjectURL(link.href), 10000)
    status(`saved ${answer.name}${answer.saved_to ? ` (also on the server: ${answer.saved_to})` : ''}`)
  })
}

async function loadReference() {
  if (!state.session) return
  await guarded('compare', async () => {
    const path = $('reference').value
    const dice = await state.api.json('POST', `/api/sessions/${state.session.id}/reference`, { path })
    state.reference = path
    const bytes = await state.api.bytes(`/api/sessions/${state.session.id}/reference.nii.gz`)
    const overlay = await NVImage.new(bytes, 'reference.nii.gz', 'green', 0.35)
    overlay.cal_min = 0.5
    overlay.cal_max = 1
    const nv = state.nv
    while (nv.volumes.length > 1) nv.removeVolume(nv.volumes[1])
    nv.addVolume(overlay)
    showDice(dice)
  })
}

async function refreshDice() {
  if (!state.reference || !state.session) return
  const dice = await state.api.json('GET', `/api/sessions/${state.session.id}/dice`).catch(() => null)
  if (dice) showDice(dice)
}

function showDice(dice) {
  state.dice = dice
  const parts = Object.entries(dice.labels).map(([v, d]) => `label ${v}: ${d.toFixed(3)}`)
  $('dice').textContent = `Dice vs ${dice.reference} (green): ${parts.join(', ') || 'no labels yet'}`
}

// -- labels ---------------------------------------------------------------------------------
async function ensureLabel(value) {
  if (state.labels.has(value)) return
  const label = await state.api.json('PUT', `/api/sessions/${state.session.id}/labels/${value}`, {})
  state.labels.set(value, label)
  renderLabels()
  applyLut()
}

function updateLabels(list) {
  const byValue = new Map(list.map((l) => [l.value, l]))
  for (const value of [...state.labels.keys()]) if (!byValue.has(value) && value !== state.label) state.labels.delete(value)
  for (const label of list) state.labels.set(label.value, label)
  renderLabels()
  applyLut()
}

async function changeLabel(value, change) {
  await guarded('label', async () => {
    const label = await state.api.json('PUT', `/api/sessions/${state.session.id}/labels/${value}`, change)
    state.labels.set(value, label)
    renderLabels()
    applyLut()
  })
}

function selectLabel(value) {
  state.label = value
  if (state.tool === 'brush') state.nv.setPenValue(value, false)
  renderLabels()
}

function renderLabels() {
  const list = $('labels')
  list.replaceChildren()
  for (const label of [...state.labels.values()].sort((a, b) => a.value - b.value)) {
    const li = document.createElement('li')
    li.classList.toggle('active', label.value === state.label)
    const pick = Object.assign(document.createElement('input'), { type: 'radio', name: 'label', checked: label.value === state.label, title: `make label ${label.value} active (${label.value})` })
    pick.onchange = () => selectLabel(label.value)
    const hex = '#' + label.color.map((c) => c.toString(16).padStart(2, '0')).join('')
    const color = Object.assign(document.createElement('input'), { type: 'color', value: hex, title: 'colour' })
    color.onchange = () => changeLabel(label.value, { color: [1, 3, 5].map((n) => parseInt(color.value.slice(n, n + 2), 16)) })
    const name = Object.assign(document.createElement('input'), { type: 'text', value: label.name, title: 'name' })
    name.onchange = () => changeLabel(label.value, { name: name.value })
    const visible = Object.assign(document.createElement('input'), { type: 'checkbox', checked: label.visible, title: 'show (H)' })
    visible.onchange = () => changeLabel(label.value, { visible: visible.checked })
    li.append(pick, color, name, visible, Object.assign(document.createElement('span'), { textContent: label.value }))
    li.onclick = (e) => { if (e.target === li) selectLabel(label.value) }
    list.append(li)
  }
}

async function newLabel() {
  if (!state.session) return
  let value = 1
  while (state.labels.has(value)) value++
  await guarded('label', () => ensureLabel(value))
  selectLabel(value)
}

// -- tools, view ----------------------------------------------------------------------------
function setTool(tool) {
  const nv = state.nv
  state.tool = tool
  for (const b of document.querySelectorAll('#tools button')) b.classList.toggle('active', b.dataset.tool === tool)
  const drawing = tool === 'brush' || tool === 'eraser'
  nv.setDrawingEnabled(drawing)
  if (drawing) nv.setPenValue(tool === 'eraser' ? 0 : state.label, false)
  nv.opts.penSize = Number($('pen-size').value)
  nv.opts.mouseEventConfig = {
    leftButton: { primary: tool === 'box' ? DRAG_MODE.callbackOnly : DRAG_MODE.crosshair },
    rightButton: DRAG_MODE.windowing,
    centerButton: DRAG_MODE.pan,
  }
}

function applyWindow() {
  const volume = state.nv.volumes[0]
  if (!volume) return
  const [name, level, width] = WINDOWS[state.windowIndex]
  if (level === null) {
    volume.cal_min = volume.robust_min
    volume.cal_max = volume.robust_max
  } else {
    volume.cal_min = level - width / 2
    volume.cal_max = level + width / 2
  }
  state.nv.updateGLVolume()
  for (const b of document.querySelectorAll('#windows button')) b.classList.toggle('active', b.dataset.window === name)
  showWindow()
}

function showWindow() {
  const volume = state.nv.volumes[0]
  if (volume) $('wl').textContent = `W ${Math.round(volume.cal_max - volume.cal_min)} / L ${Math.round((volume.cal_max + volume.cal_min) / 2)}`
}

function setLayout(single) {
  state.layoutSingle = single
  state.nv.setSliceType(single ? state.grid.promptView : SLICE_TYPE.MULTIPLANAR)
}

function wireControls() {
  for (const b of document.querySelectorAll('#tools button')) b.onclick = () => setTool(b.dataset.tool)
  for (const b of document.querySelectorAll('#windows button')) {
    b.onclick = () => { state.windowIndex = WINDOWS.findIndex((w) => w[0] === b.dataset.window); applyWindow() }
  }
  $('pen-size').oninput = () => { state.nv.opts.penSize = Number($('pen-size').value) }
  $('open').onclick = () => openScan($('file').value)
  $('upload').onchange = () => { const f = $('upload').files[0]; if (f) openScan(f.name, f) }
  $('propagate').onclick = propagate
  $('cancel').onclick = cancel
  $('undo').onclick = () => undoRedo('undo')
  $('redo').onclick = () => undoRedo('redo')
  $('save').onclick = save
  $('add-label').onclick = newLabel
  $('load-reference').onclick = loadReference
  $('layout').onclick = () => state.grid && setLayout(!state.layoutSingle)
  $('help-button').onclick = () => $('help').showModal()
  const canvas = $('gl')
  canvas.addEventListener('pointerdown', onPointerDown, true)
  canvas.addEventListener('pointerup', onPointerUp, true)
  canvas.addEventListener('mouseup', () => showWindow())
  document.addEventListener('keydown', onKey, true)
}

function onKey(event) {
  const target = event.target
  if (target instanceof HTMLInputElement && target.type === 'text') return
  if (target instanceof HTMLSelectElement) return
  const key = event.key
  const ctrl = event.ctrlKey || event.metaKey
  let handled = true
  if (ctrl && (key === 'z' || key === 'Z')) undoRedo(event.shiftKey ? 'redo' : 'undo')
  else if (ctrl && (key === 'y' || key === 'Y')) undoRedo('redo')
  else if (ctrl && (key === 's' || key === 'S')) save()
  else if (ctrl || event.altKey) handled = false
  else if (key === '?' || key === 'F1') $('help').showModal()
  else if (!state.grid) handled = false
  else if (key === 'ArrowUp' || key === 'PageUp') goToSlice(currentIJK()[2] + 1)
  else if (key === 'ArrowDown' || key === 'PageDown') goToSlice(currentIJK()[2] - 1)
  else if (key === 'Escape') { cancel(); setTool('navigate') }
  else if (key === 'Enter') propagate()
  else if (TOOLS[key.toLowerCase()]) setTool(TOOLS[key.toLowerCase()])
  else if (key >= '1' && key <= '9') { const v = Number(key); guarded('label', () => ensureLabel(v)).then(() => selectLabel(v)) }
  else if (key === 'n' || key === 'N') newLabel()
  else if (key === 'h' || key === 'H') { const l = state.labels.get(state.label); if (l) changeLabel(l.value, { visible: !l.visible }) }
  else if (key === 'w' || key === 'W') { state.windowIndex = (state.windowIndex + 1) % WINDOWS.length; applyWindow() }
  else if (key === 'l' || key === 'L') setLayout(!state.layoutSingle)
  else if (key === '[' || key === ']') {
    const input = $('pen-size')
    input.value = String(Number(input.value) + (key === ']' ? 1 : -1))
    state.nv.opts.penSize = Number(input.value)
  } else handled = false
  if (handled) {
    event.preventDefault()
    event.stopPropagation()
  }
}

boot().catch((error) => { status(`the viewer failed to start: ${error.message}`, true); state.ready = true })
