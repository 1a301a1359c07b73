// promptseg's IJK voxel indices <-> NiiVue's RAS-ordered voxels, and masks in the API's packed-bits form.
//
// NiiVue shows (and draws on) a volume reordered to RAS: permRAS[p] = +-(native axis + 1) for RAS axis p,
// negative when that axis is flipped. The server sends the scan as NIfTI with voxel axes = IJK
// (i = column, j = row, k = slice), so "native" here is promptseg's (x, y, z).

import { SLICE_TYPE } from '@niivue/niivue'

export class Grid {
  constructor(image) {
    this.dims = [image.hdr.dims[1], image.hdr.dims[2], image.hdr.dims[3]] // native nx, ny, nz
    this.dimsRAS = [image.dimsRAS[1], image.dimsRAS[2], image.dimsRAS[3]]
    this.rasAxis = [0, 0, 0] // RAS axis of each native axis
    this.flip = [false, false, false]
    for (let p = 0; p < 3; p++) {
      const a = Math.abs(image.permRAS[p]) - 1
      this.rasAxis[a] = p
      this.flip[a] = image.permRAS[p] < 0
    }
    this.rasStride = [1, this.dimsRAS[0], this.dimsRAS[0] * this.dimsRAS[1]]
    // the view whose plane is a native slice (k constant): where prompts are drawn
    this.promptView = [SLICE_TYPE.SAGITTAL, SLICE_TYPE.CORONAL, SLICE_TYPE.AXIAL][this.rasAxis[2]]
    this.promptViewName = ['sagittal', 'coronal', 'axial'][this.rasAxis[2]]
  }

  get nx() { return this.dims[0] }
  get ny() { return this.dims[1] }
  get nz() { return this.dims[2] }

  nativeToRas(ijk) {
    const ras = [0, 0, 0]
    for (let a = 0; a < 3; a++) ras[this.rasAxis[a]] = this.flip[a] ? this.dims[a] - 1 - ijk[a] : ijk[a]
    return ras
  }

  rasToNative(ras) {
    const ijk = [0, 0, 0]
    for (let a = 0; a < 3; a++) {
      const v = Math.round(ras[this.rasAxis[a]])
      ijk[a] = this.flip[a] ? this.dims[a] - 1 - v : v
    }
    return ijk
  }

  rasIndexToNative(index) {
    const [d0, d1] = this.dimsRAS
    return this.rasToNative([index % d0, Math.floor(index / d0) % d1, Math.floor(index / (d0 * d1))])
  }

  // Index of native voxel (i, j, k) in the drawing bitmap = base + i * si + j * sj for slice k.
  slice(k) {
    const step = [0, 0, 0]
    let base = 0
    for (let a = 0; a < 3; a++) {
      const stride = this.rasStride[this.rasAxis[a]]
      if (this.flip[a]) {
        base += (this.dims[a] - 1) * stride
        step[a] = -stride
      } else {
        step[a] = stride
      }
    }
    return { base: base + k * step[2], si: step[0], sj: step[1] }
  }

  contains(ijk) {
    return ijk.every((v, a) => v >= 0 && v < this.dims[a])
  }
}

// {bbox: [x0, y0, x1, y1], bits: base64} -> calls set(i, j) for each voxel inside
export function forEachMaskVoxel(mask, set) {
  if (!mask || !mask.bbox) return
  const [x0, y0, x1, y1] = mask.bbox
  const bytes = Uint8Array.from(atob(mask.bits), (c) => c.charCodeAt(0))
  const width = x1 - x0 + 1
  const count = width * (y1 - y0 + 1)
  for (let n = 0; n < count; n++) {
    if (bytes[n >> 3] & (0x80 >> (n & 7))) set(x0 + (n % width), y0 + Math.floor(n / width))
  }
}

// the voxels of slice k where inside(i, j) is true -> {bbox, bits}
export function encodeMask(nx, ny, inside) {
  let x0 = nx, y0 = ny, x1 = -1, y1 = -1
  for (let j = 0; j < ny; j++) {
    for (let i = 0; i < nx; i++) {
      if (inside(i, j)) {
        if (i < x0) x0 = i
        if (i > x1) x1 = i
        if (j < y0) y0 = j
        if (j > y1) y1 = j
      }
    }
  }
  if (x1 < 0) return { bbox: null, bits: '' }
  const width = x1 - x0 + 1
  const count = width * (y1 - y0 + 1)
  const bytes = new Uint8Array((count + 7) >> 3)
  for (let n = 0; n < count; n++) {
    if (inside(x0 + (n % width), y0 + Math.floor(n / width))) bytes[n >> 3] |= 0x80 >> (n & 7)
  }
  let text = ''
  for (let n = 0; n < bytes.length; n += 0x8000) text += String.fromCharCode(...bytes.subarray(n, n + 0x8000))
  return { bbox: [x0, y0, x1, y1], bits: btoa(text) }
}
