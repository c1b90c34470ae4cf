// The chat webview: renders the conversation with markdown-it (raw HTML off, so model output cannot inject
// markup) and highlight.js, streams answers as they arrive, and offers Copy / Insert / Apply on code blocks.
import hljs from 'highlight.js/lib/common';
import MarkdownIt from 'markdown-it';

import type { ChatMessage } from '../../sidecar/src/protocol';
import type { FromWebview, ToWebview } from '../src/chat/messages';

interface VsCodeApi {
  postMessage(message: FromWebview): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();

const md = new MarkdownIt({
  html: false,
  linkify: true,
  breaks: false,
  highlight: (code: string, lang: string): string => {
    try {
      if (lang && hljs.getLanguage(lang)) return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
      return hljs.highlightAuto(code).value;
    } catch {
      return '';
    }
  },
});

const messagesEl = document.getElementById('messages') as HTMLDivElement;
const contextEl = document.getElementById('context') as HTMLDivElement;
const form = document.getElementById('ask') as HTMLFormElement;
const question = document.getElementById('question') as HTMLTextAreaElement;
const useSelection = document.getElementById('useSelection') as HTMLInputElement;
const stopButton = document.getElementById('stop') as HTMLButtonElement;
const sendButton = document.getElementById('send') as HTMLButtonElement;

/** The answer being streamed: its element and text so far. */
let streaming: { requestId: string; el: HTMLDivElement; text: string; frame: number | null; deltas: number } | null = null;

function renderInto(el: HTMLElement, markdown: string): void {
  el.innerHTML = md.render(markdown);
  for (const pre of Array.from(el.querySelectorAll('pre'))) addCodeActions(pre);
}

function addCodeActions(pre: HTMLPreElement): void {
  const code = pre.querySelector('code')?.textContent ?? pre.textContent ?? '';
  const bar = document.createElement('div');
  bar.className = 'code-actions';
  for (const [label, type] of [
    ['Copy', 'copy'],
    ['Insert', 'insert'],
    ['Apply', 'apply'],
  ] as const) {
    const b = document.createElement('button');
    b.textContent = label;
    b.title = type === 'apply' ? 'Preview this code as an edit (search/replace blocks, or replacing the selection)' : `${label} this code`;
    b.addEventListener('click', () => vscode.postMessage({ type, code }));
    bar.appendChild(b);
  }
  pre.parentElement?.insertBefore(bar, pre);
}

function addTurn(role: ChatMessage['role'], content: string): HTMLDivElement {
  const turn = document.createElement('div');
  turn.className = `turn ${role}`;
  const body = document.createElement('div');
  body.className = 'body';
  if (role === 'user') body.textContent = content;
  else renderInto(body, content);
  turn.appendChild(body);
  messagesEl.appendChild(turn);
  turn.scrollIntoView({ block: 'end' });
  return body;
}

function setBusy(busy: boolean): void {
  stopButton.hidden = !busy;
  sendButton.disabled = busy;
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = question.value.trim();
  if (text === '') return;
  vscode.postMessage({ type: 'ask', text, useSelection: useSelection.checked });
  question.value = '';
});
question.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    form.requestSubmit();
  }
});
stopButton.addEventListener('click', () => vscode.postMessage({ type: 'stop' }));

window.addEventListener('message', (event: MessageEvent<ToWebview>) => {
  const m = event.data;
  switch (m.type) {
    case 'history':
      messagesEl.textContent = '';
      for (const msg of m.messages) if (msg.role !== 'system') addTurn(msg.role, msg.content);
      break;
    case 'context':
      contextEl.textContent = m.text;
      break;
    case 'start': {
      addTurn('user', m.question);
      const el = addTurn('assistant', '');
      el.classList.add('streaming');
      el.setAttribute('aria-busy', 'true');
      streaming = { requestId: m.requestId, el, text: '', frame: null, deltas: 0 };
      setBusy(true);
      break;
    }
    case 'delta': {
      const s = streaming;
      if (s === null || s.requestId !== m.requestId) break;
      s.text += m.text;
      // how many pieces arrived: shows (to users inspecting, and to the e2e test) that the answer streamed
      s.el.dataset.deltas = String(++s.deltas);
      // Re-render at most once per frame: markdown of a long answer is not free.
      if (s.frame === null) {
        s.frame = requestAnimationFrame(() => {
          s.frame = null;
          renderInto(s.el, s.text);
          s.el.scrollIntoView({ block: 'end' });
        });
      }
      break;
    }
    case 'done': {
      const s = streaming;
      if (s !== null && s.requestId === m.requestId) {
        if (s.frame !== null) cancelAnimationFrame(s.frame);
        renderInto(s.el, m.text ?? s.text);
        s.el.classList.remove('streaming');
        s.el.removeAttribute('aria-busy');
        if (m.finishReason === 'cancelled') {
          const note = document.createElement('div');
          note.className = 'note';
          note.textContent = 'Stopped.';
          s.el.appendChild(note);
        }
        s.el.dataset.finish = m.finishReason;
        streaming = null;
      }
      setBusy(false);
      break;
    }
    case 'error': {
      const el = document.createElement('div');
      el.className = 'error';
      el.textContent = m.message;
      messagesEl.appendChild(el);
      if (streaming !== null) {
        streaming.el.classList.remove('streaming');
        streaming = null;
      }
      setBusy(false);
      break;
    }
    case 'notice': {
      const el = document.createElement('div');
      el.className = 'note';
      el.textContent = m.message;
      messagesEl.appendChild(el);
      break;
    }
  }
});

vscode.postMessage({ type: 'ready' });
