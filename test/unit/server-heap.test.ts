// serve raises V8's heap growth factor (src/server/heap.ts) unless the operator picked one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tuneHeapForStreaming } from '../../packages/transship/src/server/heap.js';

test('an operator-chosen --heap-growing-percent (node flags or NODE_OPTIONS) is left alone', () => {
  assert.equal(tuneHeapForStreaming(['--heap-growing-percent=50'], ''), false);
  assert.equal(tuneHeapForStreaming(['--heap_growing_percent=50'], ''), false);
  assert.equal(tuneHeapForStreaming([], '--max-old-space-size=512 --heap-growing-percent=80'), false);
});

test('otherwise the growth factor is raised', () => {
  assert.equal(tuneHeapForStreaming(['--enable-source-maps'], '--max-old-space-size=512'), true);
});
